import factory

from integrations.clients.n8n import generate_secret
from integrations.models import Integration, IntegrationKind


class IntegrationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Integration

    kind = IntegrationKind.N8N
    name = factory.Sequence(lambda n: f"integration-{n}")
    endpoint = "http://127.0.0.1:9/never"
    secret = factory.LazyFunction(generate_secret)  # an n8n integration without one is paused, not delivered
    enabled = True
