"""Grafana Live stand-in fixtures: a started stand-in per test, stopped afterwards even on failure.

`grafana_live` is Grafana with production timings (pings every 25 s) and the identities below.
`grafana_live_factory(**settings)` starts more, or differently configured, stand-ins (settings as
for GrafanaLiveStandIn; tokens and users default to the ones below).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.grafana_standin import Credential, GrafanaLiveStandIn, Role

VIEWER_TOKEN = "glsa_standin_viewer_0000000000000000"
EDITOR_TOKEN = "glsa_standin_editor_0000000000000000"
ADMIN_TOKEN = "glsa_standin_admin_00000000000000000"
EXPIRED_TOKEN = "glsa_standin_expired_000000000000000"
REVOKED_TOKEN = "glsa_standin_revoked_000000000000000"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "standin-admin-password"

DEFAULT_TOKENS: dict[str, Credential] = {
    VIEWER_TOKEN: "Viewer",
    EDITOR_TOKEN: "Editor",
    ADMIN_TOKEN: "Admin",
    EXPIRED_TOKEN: "expired",
    REVOKED_TOKEN: "revoked",
}
DEFAULT_USERS: dict[str, tuple[str, Role]] = {ADMIN_USER: (ADMIN_PASSWORD, "Admin")}

GrafanaLiveFactory = Callable[..., GrafanaLiveStandIn]


@pytest.fixture
def grafana_live_factory() -> Iterator[GrafanaLiveFactory]:
    with contextlib.ExitStack() as started:

        def start(**settings: Any) -> GrafanaLiveStandIn:
            settings.setdefault("tokens", DEFAULT_TOKENS)
            settings.setdefault("users", DEFAULT_USERS)
            return started.enter_context(GrafanaLiveStandIn(**settings))

        yield start


@pytest.fixture
def grafana_live(grafana_live_factory: GrafanaLiveFactory) -> GrafanaLiveStandIn:
    return grafana_live_factory()
