"""The thin Bitrix24 client against the sandbox portal: parsing, error classification, batch, paging (no Django)."""

from types import SimpleNamespace

import pytest

from integrations.clients.bitrix24 import BitrixClient, BitrixResponse, mask_webhook_url
from integrations.clients.http import HttpResult, TimeoutSession
from integrations.clients.params import encode_params, flatten_params
from integrations.sandbox.bitrix24 import BitrixSandbox

TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish"}


@pytest.fixture
def settings():
    """Stands in for pytest-django's fixture, which the root conftest's autouse fixture asks for; no Django here."""
    return SimpleNamespace()


@pytest.fixture
def sandbox():
    with BitrixSandbox(enforce_rate_limit=False) as sb:
        yield sb


@pytest.fixture
def client(sandbox):
    return BitrixClient(sandbox.webhook_url, session=TimeoutSession(1, 0.5))


def _add_deals(client: BitrixClient, count: int, prefix: str = "d") -> None:
    for first in range(0, count, 50):
        keys = range(first, min(first + 50, count))
        response = client.batch({f"a{i}": ("crm.deal.add", {"fields": {"TITLE": f"{prefix}{i}"}}) for i in keys})
        assert response.ok and not response.errors


def test_params_encode_to_bitrix_bracket_form():
    params = {"fields": {"TITLE": "a b", "EMAIL": [{"VALUE": "x@y", "VALUE_TYPE": "WORK"}], "SKIP": None}, "flag": True}
    assert flatten_params(params) == [
        ("fields[TITLE]", "a b"),
        ("fields[EMAIL][0][VALUE]", "x@y"),
        ("fields[EMAIL][0][VALUE_TYPE]", "WORK"),
        ("flag", "1"),
    ]
    assert encode_params({"id": "$result[a]"}) == "id=%24result%5Ba%5D"


def test_result_time_total_and_next_are_parsed(client):
    added = client.call("crm.deal.add", {"fields": {"TITLE": "x", "OPPORTUNITY": 10}})
    assert added.ok and added.result == 1 and TIME_KEYS <= set(added.time) and added.error == ""
    _add_deals(client, 59)
    page = client.call("crm.deal.list", {"select": ["ID", "TITLE"]})
    assert page.ok and len(page.result) == 50 and page.total == 60 and page.next == 50
    last = client.call("crm.deal.list", {"start": 50})
    assert len(last.result) == 10 and last.total == 60 and last.next is None
    assert client.call("crm.deal.get", {"id": 1}).result["OPPORTUNITY"] == "10.00"


def test_error_classification(sandbox, client):
    missing = client.call("crm.deal.get", {"id": 404})
    assert not missing.ok and missing.not_found and missing.error == "" and missing.error_description == "Not found"
    unknown = client.call("crm.nothing.get")
    assert unknown.error == "ERROR_METHOD_NOT_FOUND" and unknown.http.status == 404 and not unknown.not_found
    bad = BitrixClient(sandbox.webhook_url.replace(sandbox.code, "nope")).call("profile")
    assert bad.auth_failed and bad.error == "INVALID_CREDENTIALS" and not bad.rate_limited

    sandbox.fail_next(1, "operation_limit")
    blocked = client.call("crm.deal.add")
    assert blocked.rate_limited and blocked.error == "OPERATION_TIME_LIMIT" and 0 < blocked.retry_after <= 6
    sandbox.fail_next(1, "error_5xx")
    broken = client.call("crm.deal.add")
    assert broken.server_error and not broken.ok and broken.error == "" and broken.result is None

    sandbox.enforce_rate_limit, sandbox.bucket.burst = True, 1
    assert client.call("profile").ok
    limited = client.call("profile")
    assert limited.rate_limited and limited.error == "QUERY_LIMIT_EXCEEDED" and limited.http.status == 503
    assert limited.retry_after is None and not limited.server_error


def test_retry_after_header_wins():
    http = HttpResult(status=503, body=b'{"error":"QUERY_LIMIT_EXCEEDED"}', headers={"retry-after": "7"})
    response = BitrixResponse.from_http(http)
    assert response.rate_limited and response.retry_after == 7.0


def test_batch_exposes_results_and_errors_per_command(client):
    response = client.batch(
        {
            "deal": ("crm.deal.add", {"fields": {"TITLE": "Order 1", "ORIGIN_ID": "o-1"}}),
            "read": ("crm.deal.get", {"id": "$result[deal]"}),
            "missing": ("crm.deal.get", {"id": 77}),
        }
    )
    assert response.ok and response.results["deal"] == 1 and response.results["read"]["ORIGIN_ID"] == "o-1"
    assert response.errors == {"missing": {"error": "", "error_description": "Not found"}}
    with pytest.raises(ValueError):
        client.batch({f"c{i}": ("profile", {}) for i in range(51)})


def test_batch_with_numeric_keys_normalises_php_lists(client):
    response = client.batch({"0": ("crm.deal.add", {}), "1": ("crm.deal.add", {})})
    assert response.results == {"0": 1, "1": 2} and response.errors == {}


def test_list_all_follows_next_one_call_per_page(sandbox, client):
    _add_deals(client, 120)
    before = len(sandbox.requests)
    rows = client.list_all("crm.deal.list", {"filter": {"%TITLE": "d"}, "select": ["ID"]})
    assert rows.complete and [r["ID"] for r in rows] == [str(i) for i in range(1, 121)]
    assert [r["method"] for r in sandbox.requests[before:]] == ["crm.deal.list"] * 3


def test_list_all_reports_a_failed_page(sandbox, client):
    _add_deals(client, 60)
    sandbox.set_faults(error_5xx=1.0)
    rows = client.list_all("crm.deal.list")
    assert not rows.complete and rows == [] and rows.failure.server_error


def test_timeout_is_a_maybe_applied_result_not_an_exception(sandbox, client):
    sandbox.set_faults(timeout=1.0, timeout_seconds=1.5)
    response = client.call("crm.deal.add", {"fields": {"TITLE": "x"}})
    assert not response.ok and response.transport_error and response.maybe_applied
    assert response.http.error_class == "ReadTimeout"


def test_lost_response_is_maybe_applied(sandbox, client):
    sandbox.fail_next(1, "lost_response")
    response = client.call("crm.deal.add", {"fields": {"TITLE": "x"}})
    assert response.transport_error and response.maybe_applied and sandbox.deals[1]["TITLE"] == "x"


def test_acquire_runs_before_every_request_and_can_veto(sandbox):
    calls: list[int] = []
    client = BitrixClient(sandbox.webhook_url, acquire=lambda: calls.append(1))
    client.call("profile")
    client.batch({"a": ("profile", {})})
    client.list_all("crm.deal.list")
    assert len(calls) == 3
    vetoed = BitrixClient(sandbox.webhook_url, acquire=lambda: False).call("crm.deal.add")
    assert vetoed.rate_limited and not vetoed.maybe_applied and sandbox.deals == {}


def test_a_rate_limit_answer_is_reported_to_on_rate_limited():
    told: list[int] = []
    with BitrixSandbox(rate=0.5, burst=2) as tight:
        client = BitrixClient(tight.webhook_url, on_rate_limited=lambda: told.append(1))
        answers = [client.call("profile") for _ in range(3)]
    assert [a.rate_limited for a in answers] == [False, False, True]
    assert answers[2].http.status == 503 and told == [1]  # only the refused request reports


def test_webhook_code_never_shows(sandbox):
    code = sandbox.code
    client = BitrixClient(sandbox.webhook_url)
    assert client.masked_url == f"http://127.0.0.1:{sandbox.port}/***"
    assert mask_webhook_url("https://portal.example/rest/7/abc123/crm.deal.get.json") == "https://portal.example/***"
    assert code not in repr(client)
    sandbox.fail_next(1, "lost_response")
    responses = [client.call("profile"), client.call("crm.deal.get", {"id": 5})]
    sandbox.stop()
    responses.append(client.call("profile"))  # connection refused: the exception text quotes the URL
    assert responses[-1].transport_error and not responses[-1].maybe_applied
    for response in responses:
        assert code not in repr(response) and code not in response.http.error
