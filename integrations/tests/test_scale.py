"""Costs that must not grow with the size of the history or of the backlog (issue 20): checked on the SQL."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations import dispatcher
from integrations.models import IntegrationSync, SyncStatus
from integrations.tests.factories import IntegrationFactory
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_due_work_sweep_selects_one_row_per_integration_not_per_sync():
    integration = IntegrationFactory()
    for _ in range(3):
        OrderFactory()
    past = timezone.now() - timedelta(seconds=5)
    IntegrationSync.objects.filter(integration=integration).update(status=SyncStatus.PENDING, next_attempt_at=past)
    with CaptureQueriesContext(connection) as queries:
        assert dispatcher.integrations_with_due_work() == [integration.pk]
    distinct = [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"]]
    assert distinct, [q["sql"] for q in queries.captured_queries]
    for sql in distinct:
        # DISTINCT over (integration_id, id) returns every due row: the model's ordering must not leak into it.
        assert '"id"' not in sql.split("FROM")[0].replace('"integration_id"', ""), sql
        assert "ORDER BY" not in sql, sql
