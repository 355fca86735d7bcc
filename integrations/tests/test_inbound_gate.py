"""The inbound gate (POST /bitrix/webhook): every request stored first, masked and bounded; JSON answers, never 5xx."""

import json
from urllib.parse import urlencode

import pytest
from django.db import OperationalError

from integrations.inbound import services
from integrations.models import InboundStatus, InboundWebhook

pytestmark = pytest.mark.django_db

TOKEN = "tok-4f9a1c77e2"
APP_TOKEN = "app-9c1e55d0b3a4"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.BITRIX_WEBHOOK_TOKEN = TOKEN
    settings.BITRIX_APPLICATION_TOKEN = APP_TOKEN
    settings.INBOUND_MAX_BODY_BYTES = 256 * 1024


@pytest.fixture
def sent(monkeypatch):
    """Celery messages that would have been sent (on commit)."""
    from integrations.tasks import process_inbound

    messages: list[int] = []
    monkeypatch.setattr(process_inbound, "apply_async", lambda args, **kw: messages.append(args[0]))
    return messages


def event_form(event="ONCRMDEALUPDATE", deal_id="123", ts="1700000000", app_token=APP_TOKEN) -> str:
    return urlencode(
        {
            "event": event,
            "event_handler_id": "7",
            "data[FIELDS][ID]": deal_id,
            "ts": ts,
            "auth[domain]": "portal.bitrix24.com",
            "auth[member_id]": "m1",
            "auth[application_token]": app_token,
        }
    )


def post(client, body="", content_type=FORM, path="/bitrix/webhook", **kwargs):
    return client.generic("POST", path, data=body, content_type=content_type, **kwargs)


def only_row() -> InboundWebhook:
    (row,) = InboundWebhook.objects.all()
    return row


def test_event_handler_call_is_stored_accepted_and_enqueued_on_commit(client, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, event_form())
    row = only_row()
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "id": row.pk}
    assert (row.status, row.authenticated, row.event, row.remote_object) == (
        "received",
        True,
        "ONCRMDEALUPDATE",
        "DEAL_123",
    )
    assert row.dedupe_key == "ONCRMDEALUPDATE:DEAL_123:1700000000"
    assert row.method == "POST" and row.path == "/bitrix/webhook" and row.remote_addr == "127.0.0.1"
    assert sent == [row.pk]


def test_trailing_slash_path_is_accepted_too(client):
    assert post(client, event_form(), path="/bitrix/webhook/").status_code == 200


def test_robot_call_stores_quoted_query_value_verbatim(client):
    body = urlencode({"document_id[0]": "crm", "document_id[1]": "CCrmDocumentDeal", "document_id[2]": "DEAL_41"})
    response = post(client, body, path=f'/bitrix/webhook?test="test2"&token={TOKEN}')
    row = only_row()
    assert response.status_code == 200
    assert row.query == {"test": '"test2"', "token": "***"}
    assert (row.event, row.remote_object, row.authenticated) == ("ROBOT", "DEAL_41", True)


def test_percent_encoded_quotes_are_stored_as_the_same_text(client):
    post(client, "document_id[2]=DEAL_5", path=f"/bitrix/webhook?test=%22test2%22&token={TOKEN}")
    assert only_row().query["test"] == '"test2"'


@pytest.mark.parametrize(
    "how",
    [
        {"path": f"/bitrix/webhook?token={TOKEN}"},
        {"headers": {"X-Bitrix-Webhook-Token": TOKEN}},
        {"body": f"token={TOKEN}&document_id[2]=DEAL_1"},
        {
            "body": json.dumps({"token": TOKEN, "event": "ONCRMDEALADD", "data": {"FIELDS": {"ID": 9}}, "ts": 5}),
            "content_type": "application/json",
        },
        {
            "body": json.dumps({"auth": {"application_token": APP_TOKEN}, "document_id": ["crm", "D", "DEAL_2"]}),
            "content_type": "application/json",
        },
    ],
)
def test_each_documented_way_of_presenting_the_secret_is_accepted(client, how):
    response = post(
        client,
        how.get("body", "document_id[2]=DEAL_1"),
        how.get("content_type", FORM),
        path=how.get("path", "/bitrix/webhook"),
        headers=how.get("headers"),
    )
    assert response.status_code == 200, response.json()
    assert only_row().authenticated


@pytest.mark.parametrize("token", ["", "wrong-token-value", TOKEN[:-1], TOKEN + "x"])
def test_wrong_or_missing_token_is_401_and_stored_rejected(client, sent, token, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, event_form(app_token=token), path=f"/bitrix/webhook?token={token}")
    row = only_row()
    assert response.status_code == 401 and response.json()["status"] == "rejected"
    assert (row.status, row.authenticated, row.dedupe_key) == (InboundStatus.REJECTED, False, None)
    assert sent == []


def test_no_configured_secret_rejects_everything(client, settings):
    settings.BITRIX_WEBHOOK_TOKEN = ""
    settings.BITRIX_APPLICATION_TOKEN = ""
    response = post(client, event_form(app_token=""), path="/bitrix/webhook?token=")
    assert response.status_code == 401
    assert "no secret is configured" in response.json()["message"]
    assert only_row().status == InboundStatus.REJECTED


def test_replayed_event_is_stored_as_duplicate_pointing_at_the_original(
    client, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, event_form()).json()
        second = post(client, event_form()).json()
    assert first["status"] == "accepted" and second["status"] == "duplicate"
    dup = InboundWebhook.objects.get(pk=second["id"])
    assert (dup.status, dup.dedupe_key, dup.result) == ("duplicate", None, {"duplicate_of": first["id"]})
    assert sent == [first["id"]]


def test_same_event_with_another_ts_is_not_a_duplicate(client):
    assert post(client, event_form(ts="1")).json()["status"] == "accepted"
    assert post(client, event_form(ts="2")).json()["status"] == "accepted"


def test_identical_robot_calls_dedupe_within_the_minute(client):
    body, path = "document_id[2]=DEAL_3", f"/bitrix/webhook?token={TOKEN}"
    assert post(client, body, path=path).json()["status"] == "accepted"
    assert post(client, body, path=path).json()["status"] == "duplicate"


def test_secrets_are_masked_in_stored_query_body_and_headers(client):
    response = post(
        client,
        event_form() + f"&token={TOKEN}&auth[access_token]=acc-secret-77",
        path=f"/bitrix/webhook?token={TOKEN}&x=1",
        headers={
            "X-Bitrix-Webhook-Token": TOKEN,
            "Cookie": "sessionid=abc",
            "Authorization": "Bearer zzz",
            "Referer": f"https://x/?token={TOKEN}",
            "User-Agent": "Bitrix24 Webhook Engine",
        },
    )
    row = only_row()
    stored = json.dumps([row.query, row.headers, row.body])
    assert response.status_code == 200
    for secret in (TOKEN, APP_TOKEN, "acc-secret-77", "sessionid=abc", "Bearer zzz"):
        assert secret not in stored
    assert row.query == {"token": "***", "x": "1"}
    assert "auth%5Bapplication_token%5D=***" in row.body
    assert {k.lower() for k in row.headers} >= {"user-agent", "referer"}
    assert not {"cookie", "authorization", "x-bitrix-webhook-token"} & {k.lower() for k in row.headers}


def test_json_secrets_are_masked_in_stored_body(client):
    body = json.dumps(
        {"token": TOKEN, "auth": {"application_token": "some-other-app-token"}, "document_id": [1, 2, "DEAL_8"]}
    )
    post(client, body, "application/json")
    row = only_row()
    assert TOKEN not in row.body and "some-other-app-token" not in row.body
    assert json.loads(row.body)["token"] == "***"


def test_rejected_secrets_are_masked_too(client):
    post(client, event_form(app_token="guessed-app-token-1"), path="/bitrix/webhook?token=guessed-token")
    row = only_row()
    assert "guessed" not in json.dumps([row.query, row.body])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_and_stored(client, method):
    response = client.generic(method, f"/bitrix/webhook?token={TOKEN}")
    assert response.status_code == 405 and "message" in response.json()
    assert only_row().status == InboundStatus.REJECTED


def test_oversized_body_is_413_and_stored_capped(client, settings):
    settings.INBOUND_MAX_BODY_BYTES = 1000
    response = post(client, "a=" + "x" * 5000, path=f"/bitrix/webhook?token={TOKEN}")
    row = only_row()
    assert response.status_code == 413
    assert row.body_truncated and len(row.body.encode()) <= services.REJECTED_BODY_BYTES


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/octet-stream",
        "image/png",
        "application/x-www-form-urlencoded; charset=rot13",
        "application/json; charset=no-such-charset",
    ],
)
def test_unsupported_content_type_or_charset_is_415(client, content_type):
    response = post(client, "a=1", content_type, headers={"X-Bitrix-Webhook-Token": TOKEN})
    assert response.status_code == 415
    assert only_row().status == InboundStatus.REJECTED


@pytest.mark.django_db(transaction=True)  # the WSGI handler closes connections per request
def test_non_text_charset_with_a_query_string_is_a_4xx_through_the_wsgi_entry_point():
    import io
    from wsgiref.util import setup_testing_defaults

    from app.wsgi import application

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/bitrix/webhook",
        "QUERY_STRING": "a=1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=rot13",
        "CONTENT_LENGTH": "3",
        "wsgi.input": io.BytesIO(b"a=1"),
        "SERVER_NAME": "testserver",
    }
    setup_testing_defaults(environ)
    statuses = []
    body = b"".join(application(environ, lambda status, headers, exc=None: statuses.append(status)))
    assert statuses and 400 <= int(statuses[0].split()[0]) < 500, (statuses, body[:200])


@pytest.mark.parametrize(
    "body,content_type",
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ("\xff\xfe", "application/json"),
        ("[" * 100_000, "application/json"),
        ("--x\r\n", "multipart/form-data; boundary=" + "b" * 300),
        ("a=1", "multipart/form-data"),
        ("&".join(f"k{i}=v" for i in range(1100)), FORM),
    ],
)
def test_malformed_body_is_400(client, body, content_type):
    response = post(client, body, content_type, path=f"/bitrix/webhook?token={TOKEN}")
    assert response.status_code == 400, response.content
    assert only_row().status == InboundStatus.REJECTED


def test_multipart_robot_call_is_parsed(client):
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    body = encode_multipart(BOUNDARY, {"document_id[2]": "DEAL_77", "token": TOKEN})
    assert post(client, body, MULTIPART_CONTENT).status_code == 200
    row = only_row()
    assert row.remote_object == "DEAL_77" and TOKEN not in row.body


def test_accepted_body_is_capped_and_flagged(client):
    big = "document_id[2]=DEAL_1&pad=" + "y" * (services.STORED_BODY_BYTES + 10)
    post(client, big, path=f"/bitrix/webhook?token={TOKEN}")
    row = only_row()
    assert row.status == "received" and row.body_truncated
    assert len(row.body.encode()) <= services.STORED_BODY_BYTES


def test_rejected_body_keeps_at_most_4kb(client):
    post(client, "a=" + "z" * 10_000)
    row = only_row()
    assert row.status == "rejected" and row.body_truncated and len(row.body) <= 4096


def test_past_the_per_minute_limit_rejected_calls_are_only_counted(client, monkeypatch):
    monkeypatch.setattr(services, "REJECTED_PER_MINUTE", 5)
    before = services.dropped_this_minute()
    statuses = [post(client, "a=1").status_code for _ in range(8)]
    assert statuses == [401] * 8
    assert InboundWebhook.objects.filter(status="rejected").count() == 5
    assert services.dropped_this_minute() - before == 3
    assert post(client, event_form()).status_code == 200  # authenticated calls are always stored


def test_database_outage_is_503_json(client, monkeypatch):
    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "inbound_store_accepted", down)
    response = post(client, event_form())
    assert response.status_code == 503 and response.json()["status"] == "error"


def test_unexpected_error_is_answered_without_traceback(client, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("integrations.inbound.parsing.subject", boom)
    response = post(client, event_form())
    assert response.status_code == 400 and "secret internals" not in response.content.decode()


def test_broker_outage_leaves_row_received(client, monkeypatch, django_capture_on_commit_callbacks):
    from integrations.tasks import process_inbound

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(process_inbound, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, event_form())
    assert response.status_code == 200
    assert only_row().status == InboundStatus.RECEIVED


def test_log_lines_carry_prefix_and_row_id_and_no_secret(client, caplog):
    caplog.set_level("INFO", logger="integrations.inbound")
    post(client, event_form())
    post(client, event_form(app_token="bad-guess-123456"))
    lines = [r.getMessage() for r in caplog.records if r.name == "integrations.inbound"]
    assert lines and all(line.startswith("[INBOUND] row=") for line in lines)
    assert not any(s in line for line in lines for s in (TOKEN, APP_TOKEN, "bad-guess-123456"))
