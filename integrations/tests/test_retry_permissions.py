"""Every operator retry (API, dashboard, admin action, sync_retry) goes through services.sync_retry: the same
stale-state check everywhere, and the change permission on integration syncs where a person clicks."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from integrations import services
from integrations.models import IntegrationKind, IntegrationSync, SyncStatus
from integrations.tests.factories import IntegrationFactory
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/integrations/integrationsync/"


def stale_bitrix_rows():
    """A dead create of an order whose later update was delivered: retrying the create would put old data back."""
    bitrix = IntegrationFactory(kind=IntegrationKind.BITRIX24, endpoint="https://portal.example.com/rest/1/abcdefgh/")
    order = OrderFactory()
    order.title = "newer"
    order.save()
    created, updated = IntegrationSync.objects.filter(integration=bitrix, content_type__model="order").order_by(
        "sequence"
    )
    IntegrationSync.objects.filter(pk=created.pk).update(status=SyncStatus.DEAD)
    IntegrationSync.objects.filter(pk=updated.pk).update(status=SyncStatus.SYNCED)
    return created, updated


def admin_client(*codenames: str) -> Client:
    user = UserFactory(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def run_action(client: Client, action: str, *rows):
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [r.pk for r in rows], "index": 0}, follow=True
    )


def test_sync_retry_refuses_stale_state_and_delivered_rows_with_the_reason():
    created, updated = stale_bitrix_rows()

    with pytest.raises(services.RetryRefused, match="newer row"):
        services.sync_retry(sync_id=created.pk)
    with pytest.raises(services.RetryRefused, match="resync"):
        services.sync_retry(sync_id=updated.pk)
    created.refresh_from_db()
    assert created.status == SyncStatus.DEAD


def test_admin_retry_action_applies_the_stale_state_check():
    created, updated = stale_bitrix_rows()
    operator = admin_client("view_integrationsync", "change_integrationsync")

    response = run_action(operator, "retry_now", created, updated)

    created.refresh_from_db()
    updated.refresh_from_db()
    assert (created.status, updated.status) == (SyncStatus.DEAD, SyncStatus.SYNCED)
    shown = [str(m) for m in response.context["messages"]]
    assert any("2 not retried" in m and "newer row" in m for m in shown), shown


def test_admin_retry_action_retries_a_dead_row_for_an_operator():
    n8n = IntegrationFactory()
    OrderFactory()
    row = IntegrationSync.objects.filter(integration=n8n, content_type__model="order").get()
    IntegrationSync.objects.filter(pk=row.pk).update(status=SyncStatus.DEAD, attempts=20)

    run_action(admin_client("view_integrationsync", "change_integrationsync"), "retry_now", row)

    row.refresh_from_db()
    assert (row.status, row.attempts) == (SyncStatus.PENDING, 0)


def test_admin_retry_action_is_not_offered_to_view_only_staff_and_does_nothing():
    n8n = IntegrationFactory()
    OrderFactory()
    row = IntegrationSync.objects.filter(integration=n8n, content_type__model="order").get()
    IntegrationSync.objects.filter(pk=row.pk).update(status=SyncStatus.DEAD)
    viewer = admin_client("view_integrationsync")

    page = viewer.get(CHANGELIST).content.decode()
    run_action(viewer, "retry_now", row)

    assert "retry_now" not in page
    row.refresh_from_db()
    assert row.status == SyncStatus.DEAD


def test_there_is_no_unchecked_replay_action():
    page = Client()
    page.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert 'value="replay"' not in page.get(CHANGELIST).content.decode()
