"""The Bitrix24 sandbox behaves like the real portal over real HTTP (pure: no Django)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from integrations.clients.http import TimeoutSession, send
from integrations.sandbox.bitrix24 import BitrixSandbox, robot_call
from integrations.sandbox.bitrix24.params import parse_query

TIME_KEYS = {
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating_reset_at",
    "operating",
}


@pytest.fixture
def settings():
    """Stands in for pytest-django's fixture, which the root conftest's autouse fixture asks for; no Django here."""
    return SimpleNamespace()


@pytest.fixture
def sandbox():
    with BitrixSandbox(enforce_rate_limit=False) as sb:
        yield sb


class Receiver:
    """A tiny local HTTP endpoint that records every POST (path, query, form)."""

    def __init__(self) -> None:
        self.hits: list[dict] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                parts = urlsplit(self.path)
                outer.hits.append({"path": parts.path, "query": parse_qs(parts.query), "form": parse_qs(body)})
                outer.arrived.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def call(sb: BitrixSandbox, method: str, json=None, data=None, timeout: float = 5) -> requests.Response:
    return requests.post(sb.webhook_url + method, json=json, data=data, timeout=timeout)


def test_bracket_parsing_builds_nested_lists_and_dicts():
    parsed = parse_query("fields[CONTACT_IDS][]=5&fields[CONTACT_IDS][]=6&fields[EMAIL][0][VALUE]=a%40b&x=1")
    assert parsed == {"fields": {"CONTACT_IDS": ["5", "6"], "EMAIL": [{"VALUE": "a@b"}]}, "x": "1"}


def test_add_returns_int_and_get_returns_strings(sandbox):
    fields = {"TITLE": "Order 7", "OPPORTUNITY": 150, "CATEGORY_ID": 0, "CONTACT_IDS": [5], "ORIGIN_ID": 7}
    added = call(sandbox, "crm.deal.add.json", json={"fields": fields}).json()
    assert added["result"] == 1 and TIME_KEYS <= set(added["time"])
    got = requests.get(sandbox.webhook_url + "CRM.DEAL.GET", params={"id": 1}, timeout=5).json()["result"]
    assert got["ID"] == "1" and got["OPPORTUNITY"] == "150.00" and got["CONTACT_ID"] == "5" and got["ORIGIN_ID"] == "7"
    assert all(isinstance(v, str) for v in got.values() if v is not None)
    assert "CONTACT_IDS" not in got and sandbox.deals[1]["CONTACT_IDS"] == ["5"]


def test_unknown_fields_are_ignored_and_form_encoding_works(sandbox):
    assert call(sandbox, "crm.deal.add", data={"FIELDS[TITLE]": "x", "fields[NOPE]": "1"}).json()["result"] == 1
    assert call(sandbox, "crm.deal.update", data={"id": 1, "fields[ALSO_NOPE]": "2"}).json()["result"] is True
    got = call(sandbox, "crm.deal.get", data={"id": 1}).json()["result"]
    assert got["TITLE"] == "x" and "NOPE" not in got and "ALSO_NOPE" not in got
    multipart = requests.post(sandbox.webhook_url + "crm.deal.add", files={"fields[TITLE]": (None, "m")}, timeout=5)
    assert multipart.json()["result"] == 2 and sandbox.deals[2]["TITLE"] == "m"


def test_unknown_id_unknown_method_and_bad_credentials(sandbox):
    for method in ("crm.deal.get", "crm.deal.update", "crm.contact.delete"):
        response = call(sandbox, method, json={"id": 99})
        assert response.status_code == 400 and response.json() == {"error": "", "error_description": "Not found"}
    response = call(sandbox, "crm.nothing.here", json={})
    assert response.status_code == 404 and response.json()["error"] == "ERROR_METHOD_NOT_FOUND"
    wrong_code = sandbox.webhook_url.replace(sandbox.code, "wrong")
    response = requests.post(wrong_code + "profile", timeout=5)
    assert response.status_code == 401 and response.json()["error"] == "INVALID_CREDENTIALS"
    response = requests.post(sandbox.webhook_url.replace("/rest/1/", "/rest/2/") + "profile", timeout=5)
    assert response.status_code == 401 and response.json()["error"] == "INVALID_CREDENTIALS"
    response = requests.post(f"{sandbox.base_url}/rest/profile.json", timeout=5)
    assert response.status_code == 401 and response.json()["error"] == "NO_AUTH_FOUND"


def test_multi_fields_append_unless_id_and_delete(sandbox):
    call(sandbox, "crm.contact.add", data={"fields[NAME]": "Ann", "fields[EMAIL][0][VALUE]": "a@x.io"})
    call(
        sandbox, "crm.contact.update", json={"id": 1, "fields": {"EMAIL": [{"VALUE": "b@x.io", "VALUE_TYPE": "HOME"}]}}
    )
    emails = call(sandbox, "crm.contact.get", json={"id": 1}).json()["result"]["EMAIL"]
    assert [e["VALUE"] for e in emails] == ["a@x.io", "b@x.io"]  # appended, not replaced
    assert set(emails[0]) == {"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"} and emails[0]["TYPE_ID"] == "EMAIL"
    first, second = emails[0]["ID"], emails[1]["ID"]
    fields = {"EMAIL": [{"ID": first, "VALUE": "a2@x.io"}, {"ID": second, "DELETE": "Y"}]}
    call(sandbox, "crm.contact.update", json={"id": 1, "fields": fields})
    got = call(sandbox, "crm.contact.get", json={"id": 1}).json()["result"]
    assert got["EMAIL"] == [{"ID": first, "VALUE_TYPE": "WORK", "VALUE": "a2@x.io", "TYPE_ID": "EMAIL"}]
    assert got["HAS_EMAIL"] == "Y" and got["HAS_PHONE"] == "N" and "PHONE" not in got


def test_list_filters_by_origin_title_and_stage(sandbox):
    for i in range(3):
        fields = {"TITLE": f"Order {i}", "ORIGINATOR_ID": "shop", "ORIGIN_ID": f"o-{i}", "STAGE_ID": "NEW"}
        call(sandbox, "crm.deal.add", json={"fields": fields})
    call(sandbox, "crm.deal.add", json={"fields": {"TITLE": "Other", "STAGE_ID": "WON"}})

    def ids(flt: dict, **extra) -> list[str]:
        return [r["ID"] for r in call(sandbox, "crm.deal.list", json={"filter": flt, **extra}).json()["result"]]

    assert ids({"ORIGINATOR_ID": "shop", "ORIGIN_ID": "o-1"}) == ["2"]
    assert ids({"=ORIGIN_ID": "o-2"}) == ["3"]
    assert ids({"%TITLE": "order"}) == ["1", "2", "3"]
    assert ids({"TITLE": "Order"}) == []
    assert ids({"STAGE_ID": "WON"}) == ["4"]
    assert ids({"ID": [1, 4]}) == ["1", "4"]
    assert ids({"ORIGINATOR_ID": "shop"}, order={"ID": "DESC"}) == ["3", "2", "1"]
    rows = call(sandbox, "crm.deal.list", json={"filter": {"ID": 1}, "select": ["TITLE"]}).json()["result"]
    assert rows == [{"ID": "1", "TITLE": "Order 0"}]


def test_list_pages_of_50_with_next_and_total(sandbox):
    commands = {f"a{i}": f"crm.deal.add?fields[TITLE]=d{i}" for i in range(50)}
    for _ in range(2):
        call(sandbox, "batch", json={"cmd": commands})
    for i in range(20):
        call(sandbox, "crm.deal.add", json={"fields": {"TITLE": f"e{i}"}})
    first = call(sandbox, "crm.deal.list", json={}).json()
    assert len(first["result"]) == 50 and first["next"] == 50 and first["total"] == 120
    last = call(sandbox, "crm.deal.list", json={"start": 100}).json()
    assert len(last["result"]) == 20 and "next" not in last and last["total"] == 120
    uncounted = call(sandbox, "crm.deal.list", json={"start": -1}).json()
    assert len(uncounted["result"]) == 50 and "total" not in uncounted and "next" not in uncounted


def test_batch_references_errors_and_halt(sandbox):
    cmd = {
        "deal": "crm.deal.add?fields%5BTITLE%5D=First&fields[ORIGIN_ID]=o-9",
        "read": "crm.deal.get?id=$result[deal]",
        "copy": "crm.deal.add?fields[TITLE]=$result[read][TITLE]-copy&fields[ORIGIN_ID]=$result[read][ORIGIN_ID]",
        "bad": "crm.deal.get?id=999",
        "list": "crm.deal.list?filter[ORIGIN_ID]=o-9",
    }
    body = call(sandbox, "batch", json={"cmd": cmd}).json()
    result = body["result"]
    assert TIME_KEYS <= set(body["time"])
    assert result["result"]["deal"] == 1 and result["result"]["read"]["ID"] == "1"
    assert sandbox.deals[2]["TITLE"] == "First-copy" and sandbox.deals[2]["ORIGIN_ID"] == "o-9"
    assert result["result_error"] == {"bad": {"error": "", "error_description": "Not found"}}
    assert result["result_total"] == {"list": 2} and result["result_next"] == []
    assert set(result["result_time"]) == {"deal", "read", "copy", "list"}

    halted = call(sandbox, "batch", data={"halt": 1, "cmd[a]": "crm.deal.get?id=999", "cmd[b]": "crm.deal.add"})
    assert halted.status_code == 200 and halted.json()["result"]["result"] == [] and len(sandbox.deals) == 2


def test_batch_over_50_commands_is_rejected(sandbox):
    response = call(sandbox, "batch", json={"cmd": {f"c{i}": "profile" for i in range(51)}})
    assert response.status_code == 400 and response.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"


def test_rate_limit_503_after_burst_and_batch_counts_once():
    with BitrixSandbox(rate=0.5, burst=3) as sb:
        batch = call(sb, "batch", json={"cmd": {f"c{i}": "crm.deal.add" for i in range(10)}})
        assert batch.status_code == 200 and len(sb.deals) == 10
        assert [call(sb, "profile").status_code for _ in range(3)] == [200, 200, 503]
        limited = call(sb, "profile")
        assert limited.status_code == 503
        assert limited.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        assert sb.stats["rate_limited"] == 2


def test_fault_5xx_and_operation_limit(sandbox):
    sandbox.fail_next(1, "error_5xx")
    response = call(sandbox, "crm.deal.add", json={})
    assert response.status_code == 500 and response.headers["Content-Type"].startswith("text/html")
    assert sandbox.deals == {}
    sandbox.fail_next(1, "operation_limit")
    response = call(sandbox, "crm.deal.add", json={})
    body = response.json()
    assert response.status_code == 429 and body["error"] == "OPERATION_TIME_LIMIT"
    assert body["time"]["operating_reset_at"] > body["time"]["start"] and sandbox.deals == {}
    assert [r["fault"] for r in sandbox.requests] == ["error_5xx", "operation_limit"]


def test_fault_timeout_hangs_then_drops_without_applying(sandbox):
    sandbox.set_faults(timeout=1.0, timeout_seconds=1.0)
    result = send(TimeoutSession(1, 0.3), "POST", sandbox.webhook_url + "crm.deal.add", json={})
    assert result.status is None and result.error_class == "ReadTimeout" and result.maybe_applied
    assert sandbox.deals == {}


def test_fault_lost_response_applies_then_drops(sandbox):
    sandbox.fail_next(1, "lost_response")
    result = send(TimeoutSession(1, 2), "POST", sandbox.webhook_url + "crm.deal.add", json={"fields": {"TITLE": "x"}})
    assert result.status is None and result.maybe_applied
    assert sandbox.deals[1]["TITLE"] == "x"
    assert call(sandbox, "crm.deal.get", json={"id": 1}).status_code == 200  # the server keeps serving


def test_faults_via_http_are_seeded_and_repeatable(sandbox):
    def statuses() -> list[int]:
        requests.post(sandbox.base_url + "/sandbox/faults", json={"error_5xx": 0.5, "seed": 7}, timeout=5)
        return [call(sandbox, "profile").status_code for _ in range(12)]

    first = statuses()
    assert set(first) == {200, 500} and statuses() == first
    requests.post(sandbox.base_url + "/sandbox/faults", json={}, timeout=5)
    assert call(sandbox, "profile").status_code == 200


def test_control_endpoints_expose_log_and_state_and_reset(sandbox):
    call(sandbox, "crm.deal.add", json={"fields": {"TITLE": "x"}})
    log = requests.get(sandbox.base_url + "/sandbox/requests", timeout=5).json()
    assert log[0]["method"] == "crm.deal.add" and log[0]["status"] == 200 and "TITLE" in log[0]["params"]
    state = requests.get(sandbox.base_url + "/sandbox/state", timeout=5).json()
    assert state["deals"][0]["TITLE"] == "x" and state["stats"]["requests"] == 1
    assert sandbox.code not in str(log)
    requests.post(sandbox.base_url + "/sandbox/reset", timeout=5)
    assert sandbox.deals == {} and sandbox.requests == []


def test_outbound_events_reach_a_local_receiver(receiver):
    with BitrixSandbox(event_handler_url=receiver.url + "/hook") as sb:
        call(sb, "crm.deal.add", json={"fields": {"TITLE": "x"}})
        call(sb, "crm.deal.update", json={"id": 1, "fields": {"TITLE": "y"}})
        bound = call(sb, "event.bind", json={"event": "ONCRMCONTACTADD", "handler": receiver.url + "/contacts"})
        assert bound.json()["result"] is True
        call(sb, "crm.contact.add", json={"fields": {"NAME": "Ann"}})
        assert sb.wait_for_events(5)
    by_event = {(hit["form"]["event"][0], hit["path"]): hit["form"] for hit in receiver.hits}
    assert len(receiver.hits) == 4  # the contact event goes to the default handler and the bound one
    assert set(by_event) == {
        ("ONCRMDEALADD", "/hook"),
        ("ONCRMDEALUPDATE", "/hook"),
        ("ONCRMCONTACTADD", "/hook"),
        ("ONCRMCONTACTADD", "/contacts"),
    }
    update = by_event[("ONCRMDEALUPDATE", "/hook")]
    assert update["data[FIELDS][ID]"] == ["1"] and update["auth[application_token]"] == [sb.application_token]
    assert {"event_handler_id", "ts", "auth[domain]", "auth[client_endpoint]", "auth[member_id]"} <= set(update)
    assert by_event[("ONCRMCONTACTADD", "/contacts")]["event_handler_id"] != update["event_handler_id"]


def test_robot_call_posts_document_id_form(receiver):
    result = robot_call(receiver.url + "/robot?secret=s1", document_id="DEAL_42", extra_query={"test": '"test2"'})
    assert result.ok and receiver.arrived.wait(2)
    hit = receiver.hits[0]
    assert hit["form"] == {
        "document_id[0]": ["crm"],
        "document_id[1]": ["CCrmDocumentDeal"],
        "document_id[2]": ["DEAL_42"],
    }
    assert hit["query"] == {"secret": ["s1"], "test": ['"test2"']}
