"""Bitrix24 end to end over real HTTP against the sandbox, on PostgreSQL: one deal per order, latest state, limits."""

import logging
import threading

import pytest
from django.db import connection

from integrations import dispatcher
from integrations.models import ExternalLink, IntegrationSync, SyncStatus
from integrations.tests.support import drain_all
from orders import services as order_services
from orders.tests.factories import OrderFactory
from users import services as user_services
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def deals_for(sandbox, order):
    return [d for d in sandbox.deals.values() if str(d.get("ORIGIN_ID")) == str(order.pk)]


def contacts_for(sandbox, user):
    return [c for c in sandbox.contacts.values() if str(c.get("ORIGIN_ID")) == str(user.pk)]


def rest_calls(sandbox):
    return [r for r in sandbox.requests if not str(r.get("method", "")).startswith("sandbox")]


def test_new_order_creates_contact_then_deal_linked_with_mapped_fields(bitrix_sandbox, bitrix_integration):
    order = OrderFactory(amount="120.00", currency="EUR")
    drain_all()
    [deal] = deals_for(bitrix_sandbox, order)
    [contact] = contacts_for(bitrix_sandbox, order.user)
    assert deal["TITLE"] == f"Order #{order.pk}" and str(deal["ORIGINATOR_ID"]) == "django-orders"
    assert str(deal["STAGE_ID"]) == "NEW" and str(deal["CURRENCY_ID"]) == "EUR"
    assert float(deal["OPPORTUNITY"]) == 120.0
    assert [str(c) for c in deal["CONTACT_IDS"]] == [str(contact["ID"])]
    link = ExternalLink.objects.get(integration=bitrix_integration, content_type__model="order")
    assert link.remote_id == str(deal["ID"])


@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatchers_create_one_deal(bitrix_sandbox, bitrix_integration):
    order = OrderFactory()
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        try:
            dispatcher.drain(max_seconds=20)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    drain_all()
    assert len(deals_for(bitrix_sandbox, order)) == 1
    assert len(contacts_for(bitrix_sandbox, order.user)) == 1


def test_create_applied_but_response_lost_still_one_deal(bitrix_sandbox, bitrix_integration):
    user = UserFactory()
    drain_all()  # the contact exists first
    order = order_services.order_create(user=user, title="lost response", amount="5.00")
    bitrix_sandbox.fail_next(1, "lost_response")
    drain_all()
    assert len(deals_for(bitrix_sandbox, order)) == 1
    row = IntegrationSync.objects.get(
        integration=bitrix_integration, object_id=str(order.pk), event_type="created", content_type__model="order"
    )
    assert row.status == SyncStatus.SYNCED and row.attempts == 2
    assert [a.outcome for a in row.attempt_rows.all()] == ["unknown", "ok"]


def test_create_timing_out_is_looked_up_not_duplicated(bitrix_sandbox, bitrix_integration):
    user = UserFactory()
    drain_all()
    order = order_services.order_create(user=user, title="timeout", amount="5.00")
    bitrix_sandbox.fail_next(1, "timeout")
    drain_all()
    assert len(deals_for(bitrix_sandbox, order)) == 1


def test_every_portal_request_names_the_round_recorded_in_its_attempts(bitrix_sandbox, bitrix_integration):
    from integrations.models import SyncAttempt

    user = UserFactory()
    drain_all()
    order = order_services.order_create(user=user, title="traced", amount="5.00")
    bitrix_sandbox.fail_next(1, "lost_response")  # a second round, with a remote lookup first
    drain_all()
    order_services.order_update(order=order, data={"title": "traced v2"})
    drain_all()
    ids = [r["request_id"] for r in rest_calls(bitrix_sandbox)]
    assert len(ids) >= 4 and all(i.startswith("sync:") for i in ids)
    tokens = {f"sync:{t}" for t in SyncAttempt.objects.values_list("claim_token", flat=True)}
    assert set(ids) <= tokens
    assert len(set(ids)) >= 3  # contact round, failed deal round, retried deal round (+ the update's round)


def test_update_before_deal_exists_gives_one_deal_with_latest_data(bitrix_sandbox, bitrix_integration):
    order = OrderFactory()
    order_services.order_update(order=order, data={"title": "renamed", "amount": "77.00"})
    order_services.order_change_status(order=order, status="confirmed")
    drain_all()
    [deal] = deals_for(bitrix_sandbox, order)
    assert float(deal["OPPORTUNITY"]) == 77.0 and deal["STAGE_ID"] == "PREPARATION"
    statuses = set(
        IntegrationSync.objects.filter(
            integration=bitrix_integration, object_id=str(order.pk), content_type__model="order"
        ).values_list("status", flat=True)
    )
    assert statuses == {SyncStatus.SYNCED, SyncStatus.SUPERSEDED}


def test_hundred_rapid_updates_take_at_most_three_calls(bitrix_sandbox, bitrix_integration):
    order = OrderFactory()
    drain_all()
    before = len(rest_calls(bitrix_sandbox))
    for i in range(100):
        order_services.order_update(order=order, data={"amount": f"{i + 1}.00"})
    drain_all()
    assert len(rest_calls(bitrix_sandbox)) - before <= 3
    [deal] = deals_for(bitrix_sandbox, order)
    assert float(deal["OPPORTUNITY"]) == 100.0


def test_email_changed_twice_leaves_exactly_the_newest_email(bitrix_sandbox, bitrix_integration):
    user = UserFactory()
    drain_all()
    user_services.user_update(user=user, data={"email": "second@example.com"})
    drain_all()
    user_services.user_update(user=user, data={"email": "third@example.com", "phone": ""})
    drain_all()
    [contact] = contacts_for(bitrix_sandbox, user)
    assert [e["VALUE"] for e in contact["EMAIL"]] == ["third@example.com"]
    assert not contact.get("PHONE")


def test_a_new_contact_claimed_with_many_contact_updates_is_split_by_command_count(bitrix_sandbox, bitrix_integration):
    """An update of a linked contact takes 2 commands (update + get), an add 1: 1 add + 40 updates are 81 commands,
    which must go in two batch calls, not one that the client refuses (found by the full fault profile)."""
    users = UserFactory.create_batch(40)
    drain_all()
    newcomer = UserFactory()  # its created row comes first in the claim
    for user in users:
        user_services.user_update(user=user, data={"first_name": f"Renamed {user.pk}"})
    drain_all()
    rows = IntegrationSync.objects.filter(integration=bitrix_integration, content_type__model="user")
    assert set(rows.values_list("status", flat=True)) == {SyncStatus.SYNCED}
    assert len(contacts_for(bitrix_sandbox, newcomer)) == 1
    assert all(contacts_for(bitrix_sandbox, u)[0]["NAME"] == f"Renamed {u.pk}" for u in users)
    batches = [r for r in rest_calls(bitrix_sandbox) if r["method"] == "batch"]
    assert all(r["params"].count("=crm.contact.") <= 50 for r in batches)


def test_bucket_keeps_us_under_the_limit_and_we_recover_from_503(bitrix_sandbox, bitrix_integration):
    from integrations.sandbox.bitrix24 import BitrixSandbox

    # Steady state: our bucket (2/50) matches the portal's, so the sandbox never has to say 503.
    orders = [OrderFactory() for _ in range(30)]
    drain_all()
    assert bitrix_sandbox.stats["rate_limited"] == 0
    assert all(len(deals_for(bitrix_sandbox, o)) == 1 for o in orders)
    # A portal stricter than configured: 503 QUERY_LIMIT_EXCEEDED is deferred without burning attempts.
    strict = BitrixSandbox(rate=2, burst=1).start()
    try:
        # A fresh portal: forget what the first one holds.
        ExternalLink.objects.all().delete()
        IntegrationSync.objects.all().delete()
        bitrix_integration.endpoint = strict.webhook_url
        bitrix_integration.save()
        more = [OrderFactory() for _ in range(3)]
        for _ in range(40):  # deferrals wait their turn (no pulling forward): about 1 s each
            dispatcher.drain(max_seconds=5)
            if all(deals_for(strict, o) for o in more):
                break
            threading.Event().wait(0.5)
        assert strict.stats["rate_limited"] > 0
        assert all(len(deals_for(strict, o)) == 1 for o in more)
        assert not IntegrationSync.objects.filter(status__in=[SyncStatus.DEAD, SyncStatus.FAILED]).exists()
    finally:
        strict.stop()


def test_bad_credentials_end_terminal_with_clear_error(bitrix_sandbox, bitrix_integration):
    bitrix_integration.endpoint = bitrix_sandbox.webhook_url.replace(bitrix_sandbox.code, "wrongcode")
    bitrix_integration.save()
    OrderFactory()
    dispatcher.drain()
    rows = IntegrationSync.objects.filter(integration=bitrix_integration)
    assert {r.status for r in rows} <= {SyncStatus.FAILED, SyncStatus.PENDING}
    failed = rows.filter(status=SyncStatus.FAILED).first()
    assert failed is not None and "INVALID_CREDENTIALS" in (
        failed.last_error + failed.attempt_rows.first().response_excerpt
    )


def test_deleted_order_moves_deal_to_lost_stage_and_contact_is_kept(bitrix_sandbox, bitrix_integration):
    order = OrderFactory()
    user, order_id = order.user, order.pk
    drain_all()
    order_services.order_delete(order=order)
    drain_all()
    [deal] = [d for d in bitrix_sandbox.deals.values() if str(d.get("ORIGIN_ID")) == str(order_id)]
    assert deal["STAGE_ID"] == "LOSE"
    assert len(contacts_for(bitrix_sandbox, user)) == 1


def test_webhook_code_never_in_logs_or_admin(bitrix_sandbox, bitrix_integration, caplog, admin_client):
    caplog.set_level(logging.DEBUG)
    bitrix_sandbox.fail_next(1, "error_5xx")
    order = OrderFactory()
    drain_all()
    code = bitrix_sandbox.code
    assert code not in caplog.text
    pages = [
        "/admin/integrations/integration/",
        f"/admin/integrations/integration/{bitrix_integration.pk}/change/",
        "/admin/integrations/integrationsync/",
        f"/admin/integrations/integrationsync/{IntegrationSync.objects.filter(object_id=str(order.pk)).first().pk}/change/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert code not in response.content.decode()


def test_a_portal_over_its_limit_empties_our_shared_bucket(redis_client):
    """Our bucket allows 10/s (burst 100), the portal 0.5/s: after its 503 every process waits for the refill."""
    from integrations.models import Integration, IntegrationKind
    from integrations.sandbox.bitrix24 import BitrixSandbox
    from integrations.targets.bitrix_limits import bitrix_client_for, bucket_for

    with BitrixSandbox(rate=0.5, burst=2) as tight:
        integration = Integration.objects.create(
            kind=IntegrationKind.BITRIX24, name="tight", endpoint=tight.webhook_url, rate_limit="10/100"
        )
        client = bitrix_client_for(integration)
        assert [client.call("profile").rate_limited for _ in range(2)] == [False, False]
        assert bucket_for(integration).state()["tokens"] > 90
        assert client.call("profile").rate_limited
        assert bucket_for(integration).state()["tokens"] < 5
