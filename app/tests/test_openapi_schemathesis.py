"""Schemathesis against the served OpenAPI schema, in-process: whatever it sends, as staff, customer or anonymous,
the answer is no 5xx and has a status code, content type and body that the schema documents for the operation."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.wsgi import application
from integrations.models import Heartbeat, InboundWebhook, IntegrationKind, IntegrationSync, SyncStatus
from integrations.tests.factories import IntegrationFactory
from orders.models import Order, OrderStatus
from orders.tests.factories import OrderFactory
from users.models import User
from users.tests.factories import UserFactory

SCHEMA_URL = "/api/schema/?format=json"
# Staff reach every view's input handling, so they get the coverage phase (boundaries, each kind of invalid value);
# customers and anonymous callers mostly stop at the permission check, where random cases are enough.
schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, application)
fuzz_schema = schemathesis.openapi.from_wsgi(
    SCHEMA_URL, application, config=schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": False}}})
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Bounded so the module runs in well under a minute; the fixtures' rows are meant to live across all examples.
BOUNDED = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PATH_MODELS = {"order_id": Order, "user_id": User, "sync_id": IntegrationSync}


def flatmap_path_parameters(context, path_parameters: dict | None) -> st.SearchStrategy:
    """Half the time aim at rows that exist, so the 200 answers get checked too, not only the 404s."""
    if not path_parameters:
        return st.just(path_parameters)
    # An index is drawn, not an id: the run deletes and creates rows, and Hypothesis must be able to replay the draws.
    existing = st.integers(min_value=0, max_value=9).map(lambda index: existing_ids(path_parameters, index))
    return st.one_of(st.just(path_parameters), existing)


def existing_ids(path_parameters: dict, index: int) -> dict:
    ids = dict(path_parameters)
    for name in path_parameters:
        pks = list(PATH_MODELS[name].objects.order_by("pk").values_list("pk", flat=True))
        if pks:
            ids[name] = pks[index % len(pks)]
    return ids


schema.hook(flatmap_path_parameters)
fuzz_schema.hook(flatmap_path_parameters)


@pytest.fixture(autouse=True)
def _keep_test_connection():
    """Keep the test's transaction: unhook the per-request connection closing, as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def rows(db, redis_client):
    """Some of everything the API shows: orders of several owners, syncs (one dead), an inbound call, heartbeats."""
    IntegrationFactory()
    IntegrationFactory(kind=IntegrationKind.BITRIX24, endpoint="https://portal.example.com/rest/1/code/")
    OrderFactory.create_batch(2)
    OrderFactory(status=OrderStatus.CONFIRMED)
    dead = IntegrationSync.objects.order_by("pk").first()
    IntegrationSync.objects.filter(pk=dead.pk).update(status=SyncStatus.DEAD, attempts=10, last_error="503")
    Heartbeat.objects.create(name="celery@host", kind="worker", seen_at=timezone.now(), info={"pid": 1})
    Heartbeat.objects.create(name="beat", kind="beat", seen_at=timezone.now())
    InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", event="ONCRMDEALUPDATE", query={"ts": "1"})


def token_header(*, is_staff: bool) -> dict:
    user = UserFactory(is_staff=is_staff)
    OrderFactory(user=user)
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@pytest.fixture
def staff_headers(rows) -> dict:
    return token_header(is_staff=True)


@pytest.fixture
def customer_headers(rows) -> dict:
    return token_header(is_staff=False)


@schema.parametrize()
@BOUNDED
def test_staff_get_documented_answers(case, staff_headers):
    case.call_and_validate(headers=staff_headers, checks=CHECKS)


@fuzz_schema.parametrize()
@BOUNDED
def test_customers_get_documented_answers(case, customer_headers):
    case.call_and_validate(headers=customer_headers, checks=CHECKS)


@fuzz_schema.parametrize()
@settings(BOUNDED, max_examples=5)  # all but the token endpoint answer 401 before reading the input
def test_anonymous_callers_get_documented_answers(case, rows):
    case.call_and_validate(checks=CHECKS)


# What the first runs found, pinned as explicit cases: each failed one of the checks before its fix
# (a username pattern with ASCII-only \w, Django's HTML 404 page, undocumented 404 and 415).
JSON = "application/json"
FOUND = [
    ("POST", "/api/users/", {"body": {"email": "jose@example.com", "username": "José"}, "media_type": JSON}, 201),
    ("GET", "/api/orders/{order_id}/", {"path_parameters": {"order_id": "abc"}}, 404),
    ("GET", "/api/orders/", {"query": {"page": 999}}, 404),
    ("PATCH", "/api/users/me/", {"body": "x", "media_type": "text/plain"}, 415),
]


@pytest.mark.parametrize(("method", "path", "data", "status"), FOUND, ids=[f"{m} {p} {s}" for m, p, _, s in FOUND])
def test_cases_found_earlier_are_answered_as_documented(method, path, data, status, staff_headers):
    case = schema[path][method].Case(**data)

    response = case.call_and_validate(headers=staff_headers, checks=CHECKS)

    assert response.status_code == status
