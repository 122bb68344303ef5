"""Create the bridge's own Grafana service-account token from an admin login.

``docker compose up`` must show a moving live dashboard without anyone clicking through
Grafana's UI to make a token. So when no ``GRAFANA_TOKEN`` is given but an admin login is, the
bridge finds (or creates) a service account and mints a token for it through Grafana's HTTP API
(``pkg/services/serviceaccounts/api``). What Grafana's source fixes, and this module follows:

- Least privilege: a token carries its account's role, so HTTP push (the push route only needs a
  signed-in identity, ``pkg/api/api.go``) and WebSocket push (Org Admin, ``pkg/services/live``) use
  two accounts, ``eeg-bridge-editor`` and ``eeg-bridge-admin``; an HTTP bridge never holds Admin.
- "Already exists" is **400** with ``messageId`` ``serviceaccounts.ErrAlreadyExists`` for an account
  and ``serviceaccounts.ErrTokenAlreadyExists`` for a token name (names are unique per
  organisation; ``pkg/services/serviceaccounts/models.go``). Two bridges starting at once both end
  up with the one account and a token each.
- Every token expires (``secondsToLive``); the live sink asks for a new one before that, from the
  lifetime it asked for (``GrafanaLiveSink``, RENEW_AT_FRACTION), and on a 401. A 401 alone is not
  enough: with anonymous access on, Grafana serves an expired token as an anonymous Viewer
  (``pkg/services/authn/authnimpl/service.go``) and HTTP push answers 200.
- No sprawl: a token is named after the bridge (``<account>-<bridge id>-<time>-<random>``); once
  the new one exists, the same bridge's earlier tokens, and any expired token of the account, are
  deleted (``DELETE /api/serviceaccounts/{id}/tokens/{tokenId}``).
- Transient failures (connection, timeout, 429, 5xx) are retried with exponential backoff
  (tenacity); the answer to a wrong login or a missing permission is not.

Errors are one sentence that names the likely fix and never contain the password or a token.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import ssl
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

ROLES = ("Viewer", "Editor", "Admin")
#: Grafana's errutil message ids (pkg/services/serviceaccounts/models.go).
ACCOUNT_EXISTS = "serviceaccounts.ErrAlreadyExists"
TOKEN_EXISTS = "serviceaccounts.ErrTokenAlreadyExists"
DEFAULT_TTL_SEC = 30 * 86400

log = logging.getLogger(__name__)


class GrafanaTokenError(Exception):
    """The token could not be obtained; ``str()`` is one sentence, safe to log."""


class _Transient(GrafanaTokenError):
    """Worth another attempt: Grafana unreachable, slow, overloaded or restarting."""


class _Exists(GrafanaTokenError):
    """400/409 naming an existing account or token: recoverable where it is caught."""


def account_name(role: str, prefix: str = "eeg-bridge") -> str:
    """One account per role, so a token never carries more than its push mode needs."""
    return f"{prefix}-{role.lower()}"


def push_role(push: str) -> str:
    """WebSocket push needs Org Admin; HTTP push needs a signed-in identity, Editor is plenty."""
    return "Admin" if push == "ws" else "Editor"


def obtain_push_token(
    base_url: str,
    admin_user: str,
    admin_password: str,
    *,
    role: str,
    bridge_id: str,
    seconds_to_live: int = DEFAULT_TTL_SEC,
    prefix: str = "eeg-bridge",
    verify: ssl.SSLContext | bool = True,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
    attempts: int = 5,
    wait_initial: float = 0.5,
    wait_max: float = 8.0,
) -> str:
    """Return a new token, valid ``seconds_to_live`` s, of the service account for ``role``.

    ``bridge_id`` names this bridge's tokens (the Grafana stream id: one bridge per stream id), so
    a restart deletes its own previous token and never another bridge's. ``verify`` is the TLS
    policy (``TlsSettings.context()``); ``client`` is for tests, its auth is overridden.
    """
    if role not in ROLES:
        raise GrafanaTokenError(f"Service-account role must be one of {', '.join(ROLES)}, not '{role}'.")
    if seconds_to_live <= 0:
        raise GrafanaTokenError("The token lifetime must be positive: a bridge token always expires.")
    name = account_name(role, prefix)
    api = _Api(base_url, httpx.BasicAuth(admin_user, admin_password), client, timeout, verify)
    retrying = Retrying(
        retry=retry_if_exception_type(_Transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=wait_initial, max=wait_max, jitter=wait_initial),
        before_sleep=lambda state: log.warning(
            "grafana: token attempt %d failed (%s); retrying", state.attempt_number, state.outcome.exception()
        ),
        reraise=True,
    )
    try:
        return retrying(_mint, api, name, role, bridge_id, seconds_to_live)
    finally:
        api.close()


def _mint(api: _Api, name: str, role: str, bridge_id: str, seconds_to_live: int) -> str:
    account = api.find_account(name) or api.create_account(name, role)
    if account.get("isDisabled"):
        raise GrafanaTokenError(
            f"Grafana service account '{name}' is disabled; enable it under Administration > Service accounts."
        )
    if account.get("role") != role:
        # Only bridges of one push mode share this account: its role is exactly what they need.
        api.request("PATCH", f"/api/serviceaccounts/{account['id']}", {"role": role})
    own = f"{name}-{bridge_id}-"
    for _ in range(3):
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        token_name = f"{own}{stamp}-{secrets.token_hex(4)}"
        try:
            created = api.request(
                "POST",
                f"/api/serviceaccounts/{account['id']}/tokens",
                {"name": token_name, "secondsToLive": seconds_to_live},
            )
            break
        except _Exists:
            continue  # token names are unique per organisation: draw another suffix
    else:
        raise GrafanaTokenError(f"Grafana refused three fresh token names for '{name}' as taken.")
    key = created.get("key") if isinstance(created, dict) else None
    if not isinstance(key, str) or not key:
        raise GrafanaTokenError("Grafana created a service-account token but its answer held no key.")
    api.prune(account["id"], own, keep=created.get("id"))
    return key


class _Api:
    """The service-account calls, with every failure turned into one GrafanaTokenError sentence."""

    def __init__(self, base_url: str, auth: httpx.BasicAuth, client: httpx.Client | None, timeout: float,
                 verify: ssl.SSLContext | bool) -> None:
        self._base = base_url.rstrip("/")
        self._auth = auth
        self._timeout = timeout
        self._own = client is None
        self._client = client if client is not None else httpx.Client(verify=verify)

    def close(self) -> None:
        if self._own:
            self._client.close()

    def find_account(self, name: str) -> dict[str, Any] | None:
        # The search is a substring match: "eeg-bridge-editor" also finds "eeg-bridge-editor-2".
        found = self.request("GET", "/api/serviceaccounts/search", params={"query": name, "perpage": 100})
        accounts = found.get("serviceAccounts") if isinstance(found, dict) else None
        return next((a for a in accounts or [] if isinstance(a, dict) and a.get("name") == name), None)

    def create_account(self, name: str, role: str) -> dict[str, Any]:
        try:
            return self.request("POST", "/api/serviceaccounts", {"name": name, "role": role, "isDisabled": False})
        except _Exists:
            # Another bridge created it between our search and our create.
            account = self.find_account(name)
            if account is None:
                raise GrafanaTokenError(
                    f"Grafana refused to create service account '{name}' as it exists, yet the search cannot find it."
                ) from None
            return account

    def prune(self, account_id: int, own_prefix: str, keep: object) -> None:
        """Delete this bridge's earlier tokens and the account's expired ones; best effort."""
        try:
            tokens = self.request("GET", f"/api/serviceaccounts/{account_id}/tokens")
            for token in tokens if isinstance(tokens, list) else []:
                if not isinstance(token, dict) or token.get("id") == keep:
                    continue
                if str(token.get("name", "")).startswith(own_prefix) or token.get("hasExpired"):
                    self.request("DELETE", f"/api/serviceaccounts/{account_id}/tokens/{token['id']}")
        except GrafanaTokenError as exc:
            # The new token works; a leftover old one expires on its own.
            log.warning("grafana: could not delete the bridge's previous tokens: %s", exc)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        url = self._base + path
        try:
            response = self._client.request(
                method, url, json=body, params=params, auth=self._auth, timeout=self._timeout
            )
        except httpx.TimeoutException:
            raise _Transient(f"Grafana at {self._base} did not answer within {self._timeout:g} s.") from None
        except httpx.HTTPError as exc:
            raise _Transient(
                f"Cannot reach Grafana at {self._base} ({type(exc).__name__}); check GRAFANA_URL and that Grafana runs."
            ) from None
        status = response.status_code
        if status == 409 or (status == 400 and _message_id(response) in (ACCOUNT_EXISTS, TOKEN_EXISTS)):
            raise _Exists(self._explain(response, method, path))
        if status == 429 or status >= 500:
            raise _Transient(self._explain(response, method, path))
        if status >= 400:
            raise GrafanaTokenError(self._explain(response, method, path))
        try:
            return response.json()
        except ValueError:
            raise GrafanaTokenError(f"Grafana answered {method} {path} with something that is not JSON.") from None

    def _explain(self, response: httpx.Response, method: str, path: str) -> str:
        status = response.status_code
        if status == 401:
            return (
                "Grafana rejected GRAFANA_ADMIN_USER / GRAFANA_ADMIN_PASSWORD (401): wrong login, "
                "or basic auth is disabled in Grafana."
            )
        if status == 403:
            # With [auth.anonymous] on, a wrong login falls through to an anonymous Viewer
            # (pkg/services/authn/authnimpl/service.go), which the service-account API refuses 403:
            # Grafana's answer cannot tell a wrong password from a missing role.
            return (
                "Grafana refused the service-account API to GRAFANA_ADMIN_USER (403): either the login is "
                "wrong (with anonymous access on, Grafana answers a wrong password with 403, not 401) "
                "or the user lacks the Admin role in the organisation."
            )
        if status == 404:
            return (
                f"Grafana at {self._base} has no {path} (404): check GRAFANA_URL (sub-path?) "
                "and use Grafana 9.1 or newer."
            )
        return f"Grafana answered {status} to {method} {path}: {_message(response)}."


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _message_id(response: httpx.Response) -> str | None:
    value = _json(response).get("messageId")
    return value if isinstance(value, str) else None


def _message(response: httpx.Response) -> str:
    """Grafana's own one-line reason, cut short; never the request, which holds credentials."""
    message = _json(response).get("message")
    text = message if isinstance(message, str) and message else response.reason_phrase or "no reason given"
    return text.strip().rstrip(".")[:200]
