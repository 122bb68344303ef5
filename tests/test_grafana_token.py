"""bridge.sinks.grafana_token against a respx-mocked Grafana HTTP API.

The request shapes below follow Grafana's service-account API (``/api/serviceaccounts``); a
real Grafana cannot run on the build machines.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import respx

from bridge.sinks.grafana_token import GrafanaTokenError, obtain_push_token

BASE = "http://grafana.test:3000"
PASSWORD = "s3cret-Pa55"
TOKEN = "glsa_abcdefghijklmnopqrstuvwxyz012345_1234abcd"


def _account(id_: int = 7, name: str = "eeg-bridge", role: str = "Admin", disabled: bool = False) -> dict:
    return {"id": id_, "name": name, "login": f"sa-{name}", "role": role, "isDisabled": disabled, "tokens": 0}


def _search(*accounts: dict) -> httpx.Response:
    return httpx.Response(200, json={"totalCount": len(accounts), "serviceAccounts": list(accounts), "page": 1, "perPage": 100})


@pytest.fixture
def grafana():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def _basic(request: httpx.Request) -> tuple[str, str]:
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return user, password


def test_creates_account_and_token_when_none_exists(grafana) -> None:
    search = grafana.get("/api/serviceaccounts/search").mock(return_value=_search())
    create = grafana.post("/api/serviceaccounts").mock(return_value=httpx.Response(201, json=_account(id_=42)))
    token = grafana.post("/api/serviceaccounts/42/tokens").mock(
        return_value=httpx.Response(200, json={"id": 1, "name": "x", "key": TOKEN})
    )

    assert obtain_push_token(BASE + "/", "admin", PASSWORD) == TOKEN

    assert search.calls.last.request.url.params["query"] == "eeg-bridge"
    assert json.loads(create.calls.last.request.content) == {"name": "eeg-bridge", "role": "Admin", "isDisabled": False}
    body = json.loads(token.calls.last.request.content)
    assert body["name"].startswith("eeg-bridge-") and body["secondsToLive"] == 0
    for route in (search, create, token):
        assert _basic(route.calls.last.request) == ("admin", PASSWORD)


def test_reuses_existing_account_and_mints_distinct_tokens(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(
        # substring search also returns look-alikes: only the exact name counts
        return_value=_search(_account(id_=3, name="eeg-bridge-old"), _account(id_=9))
    )
    create = grafana.post("/api/serviceaccounts")
    tokens = grafana.post("/api/serviceaccounts/9/tokens").mock(
        return_value=httpx.Response(200, json={"id": 1, "name": "x", "key": TOKEN})
    )

    assert obtain_push_token(BASE, "admin", PASSWORD) == TOKEN
    assert obtain_push_token(BASE, "admin", PASSWORD) == TOKEN

    assert not create.called
    names = [json.loads(call.request.content)["name"] for call in tokens.calls]
    assert len(set(names)) == 2, "token names must differ, Grafana refuses duplicates"


def test_raises_weaker_existing_role_but_never_lowers(grafana) -> None:
    grafana.post("/api/serviceaccounts/5/tokens").mock(return_value=httpx.Response(200, json={"key": TOKEN}))
    patch = grafana.patch("/api/serviceaccounts/5").mock(return_value=httpx.Response(200, json=_account(id_=5)))

    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=5, role="Editor")))
    obtain_push_token(BASE, "admin", PASSWORD, role="Admin")
    assert json.loads(patch.calls.last.request.content) == {"role": "Admin"}

    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=5, role="Admin")))
    obtain_push_token(BASE, "admin", PASSWORD, role="Editor")
    assert patch.call_count == 1


def test_create_race_recovers_by_searching_again(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(side_effect=[_search(), _search(_account(id_=11))])
    grafana.post("/api/serviceaccounts").mock(
        return_value=httpx.Response(409, json={"message": "service account already exists"})
    )
    grafana.post("/api/serviceaccounts/11/tokens").mock(return_value=httpx.Response(200, json={"key": TOKEN}))

    assert obtain_push_token(BASE, "admin", PASSWORD) == TOKEN


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        (401, "GRAFANA_ADMIN_PASSWORD"),
        (403, "Admin role"),
        (404, "GRAFANA_URL"),
        (500, "500"),
    ],
)
def test_http_errors_become_one_safe_sentence(grafana, status: int, fragment: str) -> None:
    grafana.get("/api/serviceaccounts/search").mock(
        return_value=httpx.Response(status, json={"message": "nope"})
    )
    with pytest.raises(GrafanaTokenError) as caught:
        obtain_push_token(BASE, "admin", PASSWORD)
    message = str(caught.value)
    assert fragment in message
    assert PASSWORD not in message and "\n" not in message


def test_token_conflict_is_a_token_error(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=2)))
    grafana.post("/api/serviceaccounts/2/tokens").mock(
        return_value=httpx.Response(409, json={"message": "token name taken"})
    )
    with pytest.raises(GrafanaTokenError, match="409"):
        obtain_push_token(BASE, "admin", PASSWORD)


def test_connection_error_and_timeout(grafana) -> None:
    route = grafana.get("/api/serviceaccounts/search")
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(GrafanaTokenError, match="Cannot reach Grafana"):
        obtain_push_token(BASE, "admin", PASSWORD)
    route.mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(GrafanaTokenError, match="did not answer within 2 s"):
        obtain_push_token(BASE, "admin", PASSWORD, timeout=2)


def test_disabled_account_and_missing_key(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=4, disabled=True)))
    with pytest.raises(GrafanaTokenError, match="disabled"):
        obtain_push_token(BASE, "admin", PASSWORD)

    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=4)))
    grafana.post("/api/serviceaccounts/4/tokens").mock(return_value=httpx.Response(200, json={"id": 1}))
    with pytest.raises(GrafanaTokenError, match="no key"):
        obtain_push_token(BASE, "admin", PASSWORD)


def test_unknown_role_is_rejected_before_any_request(grafana) -> None:
    with pytest.raises(GrafanaTokenError, match="Viewer, Editor, Admin"):
        obtain_push_token(BASE, "admin", PASSWORD, role="Owner")
    assert not grafana.calls


def test_uses_the_given_client_and_leaves_it_open(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=1)))
    grafana.post("/api/serviceaccounts/1/tokens").mock(return_value=httpx.Response(200, json={"key": TOKEN}))
    with httpx.Client(headers={"X-Test": "1"}) as client:
        assert obtain_push_token(BASE, "admin", PASSWORD, client=client) == TOKEN
        assert not client.is_closed
    assert grafana.calls.last.request.headers["x-test"] == "1"
