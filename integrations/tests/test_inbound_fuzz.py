"""Property: whatever reaches /bitrix/webhook (method, query, headers, content type, body, size) gets a JSON answer
below 500, every row is storable and free of secrets, and processing an accepted row never raises."""

import json
from urllib.parse import urlencode

import pytest
from django.test.client import encode_multipart
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from integrations.inbound import services
from integrations.inbound.processing import inbound_process
from integrations.models import InboundWebhook

pytestmark = pytest.mark.django_db

TOKEN = "fuzz-token-abcdef"
APP_TOKEN = "fuzz-app-token-123456"
LIMIT = 2048
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

METHODS = st.sampled_from(["POST"] * 16 + ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "BREW"])
CHARSETS = st.sampled_from(["", "; charset=utf-8", "; charset=latin-1", "; charset=utf-16", "; charset=nope", ";;="])
MEDIA = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=BoUnDaRy",
        "multipart/form-data",
        "application/json",
        "application/vnd.bitrix+json",
        "text/plain",
        "",
        "application/octet-stream",
    ]
)
CONTENT_TYPES = st.one_of(*[st.builds(str.__add__, MEDIA, CHARSETS)] * 3, st.text(max_size=60))
TEXT = st.text(max_size=40)
KEYS = st.one_of(
    st.sampled_from(["event", "ts", "data[FIELDS][ID]", "document_id[2]", "token", "auth[application_token]"]), TEXT
)
SECRETS = st.sampled_from([TOKEN, APP_TOKEN, "", "wrong"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT, SECRETS)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=20
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["form", "json", "multipart", "binary", "text", "big", "empty"]))
    if kind == "form":
        pairs = draw(
            st.lists(
                st.tuples(KEYS, st.one_of(TEXT, SECRETS, st.sampled_from(["DEAL_1", "ONCRMDEALUPDATE"]))), max_size=8
            )
        )
        return urlencode(pairs).encode()
    if kind == "json":
        return json.dumps(draw(st.one_of(st.dictionaries(KEYS, JSON_VALUES, max_size=6), JSON_VALUES))).encode()
    if kind == "multipart":
        fields = draw(st.dictionaries(KEYS.filter(lambda k: "\x00" not in k), TEXT, max_size=5))
        data = encode_multipart("BoUnDaRy", fields)
        cut = draw(st.integers(0, len(data)))
        return data[:cut] if draw(st.booleans()) else data
    if kind == "binary":
        return draw(st.binary(max_size=600))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    if kind == "big":
        return b"a=" + b"x" * draw(st.integers(LIMIT - 10, LIMIT * 3))
    return b""


HEADER_NAMES = st.one_of(
    st.sampled_from(["X-Bitrix-Webhook-Token", "Cookie", "Authorization", "User-Agent", "X-Forwarded-For", "Referer"]),
    st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z"),
)
HEADERS = st.dictionaries(HEADER_NAMES, st.one_of(st.text(max_size=80), SECRETS), max_size=6)
QUERIES = st.one_of(
    st.text(max_size=80),
    st.lists(st.tuples(st.one_of(KEYS, st.just("test")), st.one_of(TEXT, SECRETS, st.just('"test2"'))), max_size=5).map(
        urlencode
    ),
)


@pytest.fixture
def gate(settings, monkeypatch):
    from integrations.tasks import process_inbound

    settings.BITRIX_WEBHOOK_TOKEN = TOKEN
    settings.BITRIX_APPLICATION_TOKEN = APP_TOKEN
    settings.INBOUND_MAX_BODY_BYTES = LIMIT
    monkeypatch.setattr(process_inbound, "apply_async", lambda *a, **kw: None)


def as_wsgi(text: str) -> str:
    """What a WSGI server hands over: the raw UTF-8 bytes as latin-1 text, without line breaks."""
    return text.encode("utf-8").decode("iso-8859-1").replace("\r", " ").replace("\n", " ")


def send(client, method, query, headers, content_type, body):
    return client.generic(
        method,
        "/bitrix/webhook",
        data=body,
        content_type=as_wsgi(content_type),
        headers={k: as_wsgi(v) for k, v in headers.items()},
        QUERY_STRING=as_wsgi(query),
    )


def check(response) -> None:
    event(f"HTTP {response.status_code}")  # shown by --hypothesis-show-statistics
    assert response.status_code < 500, response.content
    if response.content:  # HEAD answers have no body
        assert "status" in response.json()


@FUZZ
@given(method=METHODS, query=QUERIES, headers=HEADERS, content_type=CONTENT_TYPES, body=bodies())
def test_any_request_gets_a_json_answer_below_500_and_stores_no_secret(
    client, gate, monkeypatch, method, query, headers, content_type, body
):
    monkeypatch.setattr(services, "REJECTED_PER_MINUTE", 10**9)  # store every rejected call: exercise the insert
    before = InboundWebhook.objects.order_by("-id").values_list("id", flat=True).first() or 0
    check(send(client, method, query, headers, content_type, body))
    for row in InboundWebhook.objects.filter(id__gt=before):
        stored = json.dumps([row.query, row.headers, row.body])
        assert TOKEN not in stored and APP_TOKEN not in stored
        assert len(row.body.encode()) <= services.STORED_BODY_BYTES


@FUZZ
@given(content_type=CONTENT_TYPES, body=bodies(), query=QUERIES)
def test_authenticated_calls_are_stored_and_processing_them_never_raises(client, gate, content_type, body, query):
    response = send(client, "POST", f"{query}&token={TOKEN}", {}, content_type, body)
    check(response)
    if response.status_code == 200:
        row = InboundWebhook.objects.get(pk=response.json()["id"])
        assert row.authenticated and row.status in ("received", "duplicate")
        assert inbound_process(inbound_id=row.pk) in ("ignored", "failed", "skipped")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(), headers=HEADERS)
def test_rejected_floods_stay_bounded(client, gate, body, headers):
    check(send(client, "POST", "", headers, "application/x-www-form-urlencoded", body))
    assert InboundWebhook.objects.filter(status="rejected").count() <= services.REJECTED_PER_MINUTE
