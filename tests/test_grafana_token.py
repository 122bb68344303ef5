"""bridge.sinks.grafana_token: request shapes and retry decisions against respx, behaviour
(status codes, races, expiry, sprawl, least privilege) against the Grafana stand-in, whose
service-account API follows pkg/services/serviceaccounts; TLS against a real HTTPS server.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
import respx

from bridge.sinks import grafana_token
from bridge.sinks.grafana_token import GrafanaTokenError, obtain_push_token as _obtain


def obtain_push_token(*args, **kwargs):  # type: ignore[no-untyped-def]
    """The function under test with quick retries (the waits are not what these tests check)."""
    kwargs.setdefault("role", "Admin")
    kwargs.setdefault("bridge_id", "eeg")
    kwargs.setdefault("wait_initial", 0.01)
    kwargs.setdefault("wait_max", 0.02)
    return _obtain(*args, **kwargs)


BASE = "http://grafana.test:3000"
PASSWORD = "s3cret-Pa55"
TOKEN = "glsa_abcdefghijklmnopqrstuvwxyz012345_1234abcd"


def _account(id_: int = 7, name: str = "eeg-bridge-admin", role: str = "Admin", disabled: bool = False) -> dict:
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
    grafana.get("/api/serviceaccounts/42/tokens").mock(return_value=httpx.Response(200, json=[]))
    token = grafana.post("/api/serviceaccounts/42/tokens").mock(
        return_value=httpx.Response(200, json={"id": 1, "name": "x", "key": TOKEN})
    )

    assert obtain_push_token(BASE + "/", "admin", PASSWORD) == TOKEN

    assert search.calls.last.request.url.params["query"] == "eeg-bridge-admin"
    assert json.loads(create.calls.last.request.content) == {"name": "eeg-bridge-admin", "role": "Admin", "isDisabled": False}
    body = json.loads(token.calls.last.request.content)
    assert body["name"].startswith("eeg-bridge-admin-eeg-") and body["secondsToLive"] == grafana_token.DEFAULT_TTL_SEC
    for route in (search, create, token):
        assert _basic(route.calls.last.request) == ("admin", PASSWORD)


def test_reuses_existing_account_and_mints_distinct_tokens(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(
        # substring search also returns look-alikes: only the exact name counts
        return_value=_search(_account(id_=3, name="eeg-bridge-admin-old"), _account(id_=9))
    )
    create = grafana.post("/api/serviceaccounts")
    grafana.get("/api/serviceaccounts/9/tokens").mock(return_value=httpx.Response(200, json=[]))
    tokens = grafana.post("/api/serviceaccounts/9/tokens").mock(
        return_value=httpx.Response(200, json={"id": 1, "name": "x", "key": TOKEN})
    )

    assert obtain_push_token(BASE, "admin", PASSWORD) == TOKEN
    assert obtain_push_token(BASE, "admin", PASSWORD) == TOKEN

    assert not create.called
    names = [json.loads(call.request.content)["name"] for call in tokens.calls]
    assert len(set(names)) == 2, "token names must differ, Grafana refuses duplicates"


def test_sets_the_account_to_exactly_the_push_modes_role(grafana) -> None:
    grafana.post("/api/serviceaccounts/5/tokens").mock(return_value=httpx.Response(200, json={"key": TOKEN}))
    grafana.get("/api/serviceaccounts/5/tokens").mock(return_value=httpx.Response(200, json=[]))
    patch = grafana.patch("/api/serviceaccounts/5").mock(return_value=httpx.Response(200, json=_account(id_=5)))

    search = grafana.get("/api/serviceaccounts/search").mock(
        return_value=_search(_account(id_=5, name="eeg-bridge-editor", role="Admin"))
    )
    obtain_push_token(BASE, "admin", PASSWORD, role="Editor")
    assert search.calls.last.request.url.params["query"] == "eeg-bridge-editor"
    assert json.loads(patch.calls.last.request.content) == {"role": "Editor"}


def test_create_race_recovers_by_searching_again(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(side_effect=[_search(), _search(_account(id_=11))])
    grafana.post("/api/serviceaccounts").mock(
        return_value=httpx.Response(
            400,
            json={"message": "service account already exists", "messageId": "serviceaccounts.ErrAlreadyExists",
                  "statusCode": 400},
        )
    )
    grafana.post("/api/serviceaccounts/11/tokens").mock(return_value=httpx.Response(200, json={"key": TOKEN}))
    grafana.get("/api/serviceaccounts/11/tokens").mock(return_value=httpx.Response(200, json=[]))

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


def test_duplicate_token_name_draws_another_name(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=2)))
    grafana.get("/api/serviceaccounts/2/tokens").mock(return_value=httpx.Response(200, json=[]))
    duplicate = httpx.Response(
        400, json={"messageId": "serviceaccounts.ErrTokenAlreadyExists", "message": "taken", "statusCode": 400}
    )
    tokens = grafana.post("/api/serviceaccounts/2/tokens").mock(
        side_effect=[duplicate, httpx.Response(200, json={"id": 5, "key": TOKEN})]
    )
    assert obtain_push_token(BASE, "admin", PASSWORD) == TOKEN
    names = [json.loads(call.request.content)["name"] for call in tokens.calls]
    assert len(names) == 2 and names[0] != names[1]


def test_other_400_is_not_taken_for_a_duplicate(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=2)))
    tokens = grafana.post("/api/serviceaccounts/2/tokens").mock(
        return_value=httpx.Response(400, json={"message": "Number of seconds before expiration should be set"})
    )
    with pytest.raises(GrafanaTokenError, match="400.*expiration should be set"):
        obtain_push_token(BASE, "admin", PASSWORD)
    assert tokens.call_count == 1


def test_transient_failures_are_retried_with_backoff_then_succeed(grafana) -> None:
    search = grafana.get("/api/serviceaccounts/search").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(503), _search(_account(id_=2))]
    )
    grafana.get("/api/serviceaccounts/2/tokens").mock(return_value=httpx.Response(200, json=[]))
    grafana.post("/api/serviceaccounts/2/tokens").mock(return_value=httpx.Response(200, json={"key": TOKEN}))
    assert obtain_push_token(BASE, "admin", PASSWORD) == TOKEN
    assert search.call_count == 3


def test_permanent_failures_are_not_retried(grafana) -> None:
    search = grafana.get("/api/serviceaccounts/search").mock(return_value=httpx.Response(401))
    with pytest.raises(GrafanaTokenError, match="401"):
        obtain_push_token(BASE, "admin", PASSWORD)
    assert search.call_count == 1


def test_connection_error_and_timeout(grafana) -> None:
    route = grafana.get("/api/serviceaccounts/search")
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(GrafanaTokenError, match="Cannot reach Grafana"):
        obtain_push_token(BASE, "admin", PASSWORD, attempts=2)
    assert route.call_count == 2
    route.mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(GrafanaTokenError, match="did not answer within 2 s"):
        obtain_push_token(BASE, "admin", PASSWORD, timeout=2, attempts=1)


def test_disabled_account_and_missing_key(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=4, disabled=True)))
    with pytest.raises(GrafanaTokenError, match="disabled"):
        obtain_push_token(BASE, "admin", PASSWORD)

    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=4)))
    grafana.get("/api/serviceaccounts/4/tokens").mock(return_value=httpx.Response(200, json=[]))
    grafana.post("/api/serviceaccounts/4/tokens").mock(return_value=httpx.Response(200, json={"id": 1}))
    with pytest.raises(GrafanaTokenError, match="no key"):
        obtain_push_token(BASE, "admin", PASSWORD)


def test_unknown_role_is_rejected_before_any_request(grafana) -> None:
    with pytest.raises(GrafanaTokenError, match="Viewer, Editor, Admin"):
        obtain_push_token(BASE, "admin", PASSWORD, role="Owner")
    assert not grafana.calls


def test_uses_the_given_client_and_leaves_it_open(grafana) -> None:
    grafana.get("/api/serviceaccounts/search").mock(return_value=_search(_account(id_=1)))
    grafana.get("/api/serviceaccounts/1/tokens").mock(return_value=httpx.Response(200, json=[]))
    grafana.post("/api/serviceaccounts/1/tokens").mock(return_value=httpx.Response(200, json={"key": TOKEN}))
    with httpx.Client(headers={"X-Test": "1"}) as client:
        assert obtain_push_token(BASE, "admin", PASSWORD, client=client) == TOKEN
        assert not client.is_closed
    assert grafana.calls.last.request.headers["x-test"] == "1"


# ---- against the stand-in (pkg/services/serviceaccounts behaviour) --------------------------------

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from bridge.config import TlsSettings  # noqa: E402
from tests.fixtures_grafana import ADMIN_PASSWORD, ADMIN_USER, GrafanaLiveFactory, grafana_live_factory  # noqa: E402,F401
from tests.grafana_standin import GrafanaLiveStandIn  # noqa: E402


def _push_status(standin: GrafanaLiveStandIn, token: str, stream_id: str = "eeg") -> int:
    response = httpx.post(
        standin.push_url(stream_id), content=b"Fz a=1 1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return response.status_code


def _standin_token(standin: GrafanaLiveStandIn, **kwargs) -> str:  # type: ignore[no-untyped-def]
    return obtain_push_token(standin.url, ADMIN_USER, ADMIN_PASSWORD, **kwargs)


def test_two_bridges_starting_at_once_both_get_working_tokens(grafana_live_factory: GrafanaLiveFactory) -> None:
    # Both searches are held until both arrived: both miss the account and both try to create it;
    # Grafana answers the second with 400 serviceaccounts.ErrAlreadyExists (not 409).
    standin = grafana_live_factory(sa_search_rendezvous=2)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_standin_token, standin, role="Editor", bridge_id=b) for b in ("rig1", "rig2")]
        tokens = [f.result(timeout=60) for f in futures]
    assert len(set(tokens)) == 2
    creates = [r for r in standin.requests() if r.method == "POST" and r.target == "/api/serviceaccounts"]
    assert sorted(r.status for r in creates) == [201, 400]
    assert [_push_status(standin, t, b) for t, b in zip(tokens, ("rig1", "rig2"))] == [200, 200]
    (account,) = standin.service_accounts()
    assert account["name"] == "eeg-bridge-editor" and len(account["token_list"]) == 2


@pytest.mark.parametrize(("push", "account_name", "role"), [("http", "eeg-bridge-editor", "Editor"),
                                                              ("ws", "eeg-bridge-admin", "Admin")])
def test_least_privilege_per_push_mode(grafana_live_factory: GrafanaLiveFactory, push: str, account_name: str,
                                       role: str) -> None:
    standin = grafana_live_factory()
    _standin_token(standin, role=grafana_token.push_role(push))
    assert [(a["name"], a["role"]) for a in standin.service_accounts()] == [(account_name, role)]


def test_tokens_expire_and_restarts_leave_one_token_per_bridge(grafana_live_factory: GrafanaLiveFactory) -> None:
    standin = grafana_live_factory()
    other = _standin_token(standin, role="Editor", bridge_id="rig2")
    first = _standin_token(standin, role="Editor", bridge_id="rig1", seconds_to_live=3600)
    second = _standin_token(standin, role="Editor", bridge_id="rig1", seconds_to_live=3600)
    (account,) = standin.service_accounts()
    names = sorted(t["name"] for t in account["token_list"])
    assert len(names) == 2 and names[0].startswith("eeg-bridge-editor-rig1-") and names[1].startswith(
        "eeg-bridge-editor-rig2-"
    )
    assert all(t["expiration"] is not None and not t["hasExpired"] for t in account["token_list"])
    # the restarted bridge's previous token is gone, the other bridge's still works
    assert (_push_status(standin, first), _push_status(standin, second), _push_status(standin, other)) == (401, 200, 200)
    standin.expire_service_account_tokens()
    assert _push_status(standin, second) == 401
    # expired tokens of any bridge are cleared at the next start
    _standin_token(standin, role="Editor", bridge_id="rig1")
    (account,) = standin.service_accounts()
    assert [t["name"].startswith("eeg-bridge-editor-rig1-") for t in account["token_list"]] == [True]


def test_live_sink_renews_an_expired_token(grafana_live_factory: GrafanaLiveFactory) -> None:
    import numpy as np
    from pydantic import SecretStr

    from bridge.config import GrafanaSettings
    from bridge.frame import FrameLayout, SpectrumFrame
    from bridge.observe.metrics import Metrics
    from bridge.sinks.grafana_live import GrafanaLiveSink

    standin = grafana_live_factory()
    settings = GrafanaSettings(standin.url, None, "eeg", "http", ADMIN_USER, SecretStr(ADMIN_PASSWORD), 5.0, 4,
                               TlsSettings(None, False))

    def mint() -> SecretStr:
        return SecretStr(_standin_token(standin, role="Editor"))

    sink = GrafanaLiveSink(settings, Metrics().sink("grafana"), token=mint(), renew=mint)
    layout = FrameLayout("s", ("Fz",), np.array([1.0, 2.0]))
    sink.start()
    try:
        sink.offer(SpectrumFrame(layout, 0, 1_000_000_000, 1_000_000_000, np.zeros((1, 2), np.float32)))
        standin.wait_for(lambda: standin.frames_published(), what="first push")
        standin.expire_service_account_tokens()
        seq = 1

        def pushed_after_expiry() -> bool:
            nonlocal seq
            seq += 1
            sink.offer(SpectrumFrame(layout, seq, seq * 10**9, seq * 10**9, np.zeros((1, 2), np.float32)))
            return standin.status_counts()[401] >= 1 and standin.frames_published()["stream/eeg/Fz"] >= 2

        standin.wait_for(pushed_after_expiry, timeout=30, what="a push with a renewed token")
    finally:
        sink.close(5)
    (account,) = standin.service_accounts()
    assert len(account["token_list"]) == 1  # the expired one was deleted when the new one was minted


# ---- TLS: TLS_CA_BUNDLE / TLS_INSECURE reach the token client --------------------------------------


@pytest.fixture
def https_grafana(tmp_path):  # type: ignore[no-untyped-def]
    """A real HTTPS server with a self-signed certificate answering the three calls minimally."""
    import http.server
    import ssl
    import subprocess
    import threading

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def _json(self, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._json(_search(_account(id_=3)).json() if "search" in self.path else [])

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._json({"id": 1, "name": "x", "key": TOKEN})

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", str(cert)
    finally:
        server.shutdown()
        server.server_close()


def test_tls_ca_bundle_and_insecure_are_honoured(https_grafana) -> None:  # type: ignore[no-untyped-def]
    url, cert = https_grafana
    with pytest.raises(GrafanaTokenError, match="Cannot reach Grafana"):
        obtain_push_token(url, "admin", PASSWORD, attempts=1, verify=TlsSettings(None, False).context())
    assert obtain_push_token(url, "admin", PASSWORD, verify=TlsSettings(cert, False).context()) == TOKEN
    assert obtain_push_token(url, "admin", PASSWORD, verify=TlsSettings(None, True).context()) == TOKEN


@pytest.mark.parametrize(("push", "account_name"), [("http", "eeg-bridge-editor"), ("ws", "eeg-bridge-admin")])
def test_bridge_start_mints_with_the_push_modes_role_and_ttl(grafana_live_factory: GrafanaLiveFactory, push: str,
                                                            account_name: str) -> None:
    from bridge.rig import load_rig
    from bridge.supervisor import GrafanaCredentials

    standin = grafana_live_factory()
    env = {"LSL_STREAM_NAME": "x", "GRAFANA_URL": standin.url, "GRAFANA_PUSH": push, "GRAFANA_STREAM_ID": "rig7",
           "GRAFANA_ADMIN_USER": ADMIN_USER, "GRAFANA_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "GRAFANA_MINTED_TOKEN_TTL_SEC": "7200", "INFLUXDB_URL": ""}
    rig = load_rig(env, {})
    token = GrafanaCredentials(rig.base, rig.name).token
    assert token is not None
    (account,) = standin.service_accounts()
    (minted,) = account["token_list"]
    assert account["name"] == account_name and minted["name"].startswith(f"{account_name}-rig7-")
    assert 7000 < minted["secondsUntilExpiration"] <= 7200


def test_live_sink_renews_its_token_before_it_expires_with_anonymous_access_on(
    grafana_live_factory: GrafanaLiveFactory,
) -> None:
    """With [auth.anonymous] on, an expired token becomes an anonymous Viewer (authnimpl/service.go) whose
    HTTP push still answers 200 (reqSignedIn): no 401 ever asks for renewal. The sink replaces its
    minted token from its known lifetime instead, so no push is ever taken for anonymous."""
    import numpy as np
    from pydantic import SecretStr

    from bridge.config import GrafanaSettings
    from bridge.frame import FrameLayout, SpectrumFrame
    from bridge.observe.metrics import Metrics
    from bridge.sinks.grafana_live import GrafanaLiveSink

    standin = grafana_live_factory(anonymous_enabled=True)
    ttl = 3
    settings = GrafanaSettings(standin.url, None, "eeg", "http", ADMIN_USER, SecretStr(ADMIN_PASSWORD), 5.0, 4,
                               TlsSettings(None, False), token_ttl_sec=ttl)
    minted: list[str] = []

    def mint() -> SecretStr:
        minted.append(_standin_token(standin, role="Editor", seconds_to_live=ttl))
        return SecretStr(minted[-1])

    sink = GrafanaLiveSink(settings, Metrics().sink("grafana"), token=mint(), renew=mint)
    layout = FrameLayout("s", ("Fz",), np.array([1.0, 2.0]), 250.0)
    first_expires = time.time() + ttl
    seq = 0

    def pushed_well_after_first_expiry() -> bool:
        nonlocal seq
        seq += 1
        sink.offer(SpectrumFrame(layout, seq, seq * 10**9, seq * 10**9, np.zeros((1, 2), np.float32)))
        return any(r.received_ns / 1e9 > first_expires + ttl for r in standin.requests() if r.status == 200)

    sink.start()
    try:
        standin.wait_for(pushed_well_after_first_expiry, timeout=60, what="pushes two lifetimes on")
    finally:
        sink.close(5)
    pushes = [r for r in standin.requests() if r.target.startswith("/api/live/push/")]
    assert {r.identity for r in pushes} == {"sa:eeg-bridge-editor"}  # never anonymous
    assert standin.status_counts()[401] == 0
    assert len(minted) >= 3 and len(set(minted)) == len(minted)


def test_a_wrong_admin_password_with_anonymous_access_on_is_explained_as_a_possible_wrong_login(
    grafana_live_factory: GrafanaLiveFactory,
) -> None:
    """authnimpl/service.go: the failed password falls through to the anonymous Viewer, refused 403 by the
    service-account API; the message must not blame only the role, and never holds the password."""
    standin = grafana_live_factory(anonymous_enabled=True)
    with pytest.raises(GrafanaTokenError) as caught:
        obtain_push_token(standin.url, ADMIN_USER, "not-the-password", attempts=1)
    assert str(caught.value) == (
        "Grafana refused the service-account API to GRAFANA_ADMIN_USER (403): either the login is wrong "
        "(with anonymous access on, Grafana answers a wrong password with 403, not 401) "
        "or the user lacks the Admin role in the organisation."
    )
    assert "not-the-password" not in str(caught.value)
    assert [r.status for r in standin.requests()] == [403]
