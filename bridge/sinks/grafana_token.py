"""Create the bridge's own Grafana service-account token from an admin login.

``docker compose up`` must show a moving live dashboard without anyone clicking through
Grafana's UI to make a token. So when no ``GRAFANA_TOKEN`` is given but an admin login is, the
bridge finds (or creates) a service account named ``eeg-bridge`` and mints a fresh token for it
through Grafana's HTTP API. The role defaults to Admin because WebSocket push requires it
(HTTP push needs Editor; see shared reference grafana-live.md).

A token's secret is shown by Grafana only once, at creation, so every start mints a new one;
the account itself is reused. Errors are one sentence that names the likely fix and never
contains the password or a token.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import httpx

ROLES = ("Viewer", "Editor", "Admin")


class GrafanaTokenError(Exception):
    """The token could not be obtained; ``str()`` is one sentence, safe to log."""


def obtain_push_token(
    base_url: str,
    admin_user: str,
    admin_password: str,
    *,
    role: str = "Admin",
    name: str = "eeg-bridge",
    client: httpx.Client | None = None,
    timeout: float = 10.0,
) -> str:
    """Return a new token of service account ``name`` with at least ``role``.

    Idempotent for the account: an existing one is reused, and only raised to ``role`` if it has
    less (never lowered, so a second bridge asking for Editor cannot break one pushing over
    WebSocket with Admin). ``client`` is for TLS settings and tests; its auth is overridden.
    """
    if role not in ROLES:
        raise GrafanaTokenError(f"Service-account role must be one of {', '.join(ROLES)}, not '{role}'.")
    api = _Api(base_url, httpx.BasicAuth(admin_user, admin_password), client, timeout)
    try:
        account = api.find_account(name) or api.create_account(name, role)
        if account.get("isDisabled"):
            raise GrafanaTokenError(
                f"Grafana service account '{name}' is disabled; enable it under Administration > Service accounts."
            )
        if ROLES.index(_role_of(account)) < ROLES.index(role):
            api.request("PATCH", f"/api/serviceaccounts/{account['id']}", {"role": role})
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        created = api.request(
            "POST",
            f"/api/serviceaccounts/{account['id']}/tokens",
            # Token names must be unique per account; the suffix keeps two starts in one second apart.
            {"name": f"{name}-{stamp}-{secrets.token_hex(3)}", "secondsToLive": 0},
        )
    finally:
        api.close()
    key = created.get("key") if isinstance(created, dict) else None
    if not isinstance(key, str) or not key:
        raise GrafanaTokenError("Grafana created a service-account token but its answer held no key.")
    return key


def _role_of(account: dict[str, Any]) -> str:
    role = account.get("role")
    return role if role in ROLES else "Viewer"


class _Api:
    """The four Grafana calls, with every failure turned into one GrafanaTokenError sentence."""

    def __init__(self, base_url: str, auth: httpx.BasicAuth, client: httpx.Client | None, timeout: float) -> None:
        self._base = base_url.rstrip("/")
        self._auth = auth
        self._timeout = timeout
        self._own = client is None
        self._client = client if client is not None else httpx.Client()

    def close(self) -> None:
        if self._own:
            self._client.close()

    def find_account(self, name: str) -> dict[str, Any] | None:
        # The search is a substring match: "eeg-bridge" also finds "eeg-bridge-2".
        found = self.request("GET", "/api/serviceaccounts/search", params={"query": name, "perpage": 100})
        accounts = found.get("serviceAccounts") if isinstance(found, dict) else None
        return next((a for a in accounts or [] if isinstance(a, dict) and a.get("name") == name), None)

    def create_account(self, name: str, role: str) -> dict[str, Any]:
        try:
            return self.request("POST", "/api/serviceaccounts", {"name": name, "role": role, "isDisabled": False})
        except _Conflict:
            # Another bridge created it between our search and our create.
            account = self.find_account(name)
            if account is None:
                raise GrafanaTokenError(
                    f"Grafana refused to create service account '{name}' as it exists, yet the search cannot find it."
                ) from None
            return account

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        url = self._base + path
        try:
            response = self._client.request(
                method, url, json=body, params=params, auth=self._auth, timeout=self._timeout
            )
        except httpx.TimeoutException:
            raise GrafanaTokenError(f"Grafana at {self._base} did not answer within {self._timeout:g} s.") from None
        except httpx.HTTPError as exc:
            raise GrafanaTokenError(
                f"Cannot reach Grafana at {self._base} ({type(exc).__name__}); check GRAFANA_URL and that Grafana runs."
            ) from None
        if response.status_code == 409:
            raise _Conflict(self._explain(response, method, path))
        if response.status_code >= 400:
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
            return (
                "The Grafana user in GRAFANA_ADMIN_USER may not manage service accounts (403): "
                "it needs the Admin role in the organisation."
            )
        if status == 404:
            return (
                f"Grafana at {self._base} has no {path} (404): check GRAFANA_URL (sub-path?) "
                "and use Grafana 9.1 or newer."
            )
        return f"Grafana answered {status} to {method} {path}: {_message(response)}."


def _message(response: httpx.Response) -> str:
    """Grafana's own one-line reason, cut short; never the request, which holds credentials."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    text = message if isinstance(message, str) and message else response.reason_phrase or "no reason given"
    return text.strip().rstrip(".")[:200]


class _Conflict(GrafanaTokenError):
    """409 from Grafana: the name is taken. Account creation recovers; elsewhere it is just an error."""
