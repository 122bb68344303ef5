"""Keep the provisioned live dashboard current: its channel list, stream id and buffer length.

Why the bridge writes to the dashboard: a dashboard variable that asks InfluxDB for the channels
(``SHOW TAG VALUES``) leaves the live dashboard without any live panel when InfluxDB is down, empty or
absent, although Grafana Live receives every frame (a row repeated over a variable without values
is rendered once as an empty placeholder, dashboard-scene RowRepeaterBehavior.ts). Only the bridge
knows the stream's channels and frame rate without InfluxDB, so when it has a credential that may save dashboards (its Editor/Admin token) it rewrites
``$channel`` (a custom variable, no datasource), ``$live_stream`` and the Live panels' Max data
points through ``GET /api/dashboards/uid/<uid>`` and ``POST /api/dashboards/db``
(pkg/api/dashboard.go). The provider must allow it (``allowUiUpdates: true``): Grafana answers 400
"Cannot save provisioned dashboard" otherwise (pkg/services/dashboards/errors.go).

A failure is logged once and never stops the live push.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.sinks import grafana_layout as layout

log = logging.getLogger(__name__)


class DashboardSyncError(Exception):
    """``str()`` is one sentence, safe to log."""


def updated_live_dashboard(board: dict[str, Any], stream_id: str, channels: Sequence[str],
                           frame_rate_hz: float | None) -> dict[str, Any]:
    """``board`` with the channel list, stream id and (when known) Live buffer length replaced.

    The current detail selection is kept where it still names channels of the stream.
    """
    board = dict(board)
    variables = []
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("name") == layout.CHANNEL_VARIABLE:
            previous = variable.get("current", {}).get("value", [])
            previous = [previous] if isinstance(previous, str) else list(previous)
            kept = [c for c in previous if c in channels]
            variable = layout.channel_variable(channels)
            if kept:
                variable["current"] = {"selected": True, "text": kept, "value": kept}
                for option in variable["options"]:
                    option["selected"] = option["value"] in kept
        elif variable.get("name") == layout.STREAM_ID_VARIABLE:
            variable = {**variable, "query": stream_id, "current": {"text": stream_id, "value": stream_id},
                        "options": [{"selected": True, "text": stream_id, "value": stream_id}]}
        variables.append(variable)
    board["templating"] = {**board.get("templating", {}), "list": variables}
    if frame_rate_hz is not None and frame_rate_hz > 0:
        rows = layout.live_buffer_rows(frame_rate_hz)
        board["panels"] = [
            {**p, "maxDataPoints": rows} if (p.get("datasource") or {}).get("uid") == "grafana" else p
            for p in board.get("panels", [])
        ]
    return board


def sync_live_dashboard(base_url: str, token: SecretStr, stream_id: str, channels: Sequence[str],
                        frame_rate_hz: float | None, *, verify: ssl.SSLContext | bool = True,
                        timeout: float = 5.0, uid: str = layout.LIVE_DASHBOARD_UID) -> int:
    """Rewrite the live dashboard for this stream; return the saved version."""
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    base = base_url.rstrip("/")
    try:
        with httpx.Client(verify=verify, headers=headers, timeout=timeout) as client:
            got = client.get(f"{base}/api/dashboards/uid/{uid}")
            if got.status_code == 404:
                raise DashboardSyncError(f"Grafana has no dashboard '{uid}': provision dashboards/ (see docker-compose.yml).")
            _check(got, "read")
            board = got.json()["dashboard"]
            new = updated_live_dashboard(board, stream_id, channels, frame_rate_hz)
            saved = client.post(f"{base}/api/dashboards/db", json={
                "dashboard": new, "overwrite": True, "message": f"eeg-bridge: channels of stream {stream_id}",
            })
            _check(saved, "save")
            return int(saved.json().get("version", 0))
    except httpx.HTTPError as exc:
        raise DashboardSyncError(f"cannot reach Grafana at {base} ({type(exc).__name__}).") from None
    except (ValueError, KeyError, TypeError):
        raise DashboardSyncError("Grafana's dashboard answer was not the JSON expected.") from None


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code == 200:
        return
    try:
        message = str(response.json().get("message", ""))[:200]
    except ValueError:
        message = response.reason_phrase
    hint = {
        400: " (for a provisioned dashboard set allowUiUpdates: true in provisioning/dashboards/)",
        401: " (the token is not valid)",
        403: " (the token's role may not save dashboards: Editor or Admin)",
    }.get(response.status_code, "")
    raise DashboardSyncError(f"Grafana answered {response.status_code} to the dashboard {what}: {message}{hint}.")
