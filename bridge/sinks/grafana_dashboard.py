"""Keep the bridge's own live dashboard current: its channel list, stream id and buffer length.

Why the bridge writes to the dashboard: a dashboard variable that asks InfluxDB for the channels
(``SHOW TAG VALUES``) leaves the live dashboard without any live panel when InfluxDB is down, empty or
absent, although Grafana Live receives every frame (a row repeated over a variable without values
is rendered once as an empty placeholder, dashboard-scene RowRepeaterBehavior.ts). Only the bridge
knows the stream's channels and frame rate without InfluxDB, so when it has a credential that may
save dashboards (its Editor/Admin token) it writes ``$channel`` (a custom variable, no datasource),
``$live_stream`` and the Live panels' Max data points into a dashboard of its own, one per stream
(``owned_dashboard_uid``), made from the provisioned live dashboard and saved in its folder
(``GET /api/dashboards/uid/<uid>``, ``POST /api/dashboards/db`` with ``folderUid``,
pkg/api/dashboard.go). The provisioned dashboard is never saved: the file provisioner would put its
file back (file_reader.go), and every save reloads every open viewer (dashboardWatcher.ts), so the
owned one is saved only when its content changes.

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


owned_dashboard_uid = layout.owned_dashboard_uid


def owned_live_dashboard(template: dict[str, Any], current: dict[str, Any] | None, stream_id: str,
                         channels: Sequence[str], frame_rate_hz: float | None) -> dict[str, Any]:
    """The bridge's own live dashboard for the stream: the provisioned one's panels, its own uid.

    ``current`` is the owned dashboard as Grafana has it (None before the first save): its detail
    selection is kept, so a user's choice of channels survives the bridge's restarts.
    """
    board = {k: v for k, v in template.items() if k not in ("id", "version")}
    board["uid"] = owned_dashboard_uid(stream_id)
    board["title"] = f"{template.get('title', 'EEG live spectrogram')} - {stream_id}"
    tags = [t for t in board.get("tags", []) if t != "provisioned"]
    board["tags"] = sorted({*tags, "eeg-bridge"})
    # The template's link to this very copy (for the home page, which shows the template).
    board["links"] = [link for link in board.get("links", []) if link.get("title") != layout.OWNED_DASHBOARD_LINK_TITLE]
    if current is not None:
        chosen = next((v for v in current.get("templating", {}).get("list", [])
                       if v.get("name") == layout.CHANNEL_VARIABLE), None)
        if chosen is not None:
            board["templating"] = {**board.get("templating", {}), "list": [
                {**v, "current": chosen.get("current", {})} if v.get("name") == layout.CHANNEL_VARIABLE else v
                for v in board.get("templating", {}).get("list", [])
            ]}
    return updated_live_dashboard(board, stream_id, channels, frame_rate_hz)


def sync_live_dashboard(base_url: str, token: SecretStr, stream_id: str, channels: Sequence[str],
                        frame_rate_hz: float | None, *, verify: ssl.SSLContext | bool = True,
                        timeout: float = 5.0, uid: str = layout.LIVE_DASHBOARD_UID) -> int:
    """Make the bridge's own live dashboard of this stream current; return its version.

    Why not save the provisioned dashboard ``uid`` itself, as this did before: a save takes its
    folder from the command (pkg/api/dashboard.go postDashboard, dashboard_service.go
    GetDashboardModel), the file provisioner then puts the file's version back within
    updateIntervalSeconds (file_reader.go, "fix empty folder_uid"), and every save makes each open
    viewer reload (dashboardWatcher.ts). So the provisioned dashboard is only read, as the
    template, and the bridge writes its own (``owned_dashboard_uid``), in the template's folder,
    which no file provisions. It is saved only when what the bridge would write differs from what
    Grafana holds: a restart with the same layout saves nothing and reloads no viewer.
    """
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    base = base_url.rstrip("/")
    own = owned_dashboard_uid(stream_id)
    try:
        with httpx.Client(verify=verify, headers=headers, timeout=timeout) as client:
            got = client.get(f"{base}/api/dashboards/uid/{uid}")
            if got.status_code == 404:
                raise DashboardSyncError(f"Grafana has no dashboard '{uid}': provision dashboards/ (see docker-compose.yml).")
            _check(got, "read")
            template, folder_uid = got.json()["dashboard"], str(got.json().get("meta", {}).get("folderUid") or "")
            mine = client.get(f"{base}/api/dashboards/uid/{own}")
            current = None
            if mine.status_code != 404:
                _check(mine, "read")
                current = mine.json()["dashboard"]
            new = owned_live_dashboard(template, current, stream_id, channels, frame_rate_hz)
            if current is not None:
                same_folder = str(mine.json().get("meta", {}).get("folderUid") or "") == folder_uid
                if same_folder and {k: v for k, v in current.items() if k not in ("id", "version")} == new:
                    return int(current.get("version", 0))
            saved = client.post(f"{base}/api/dashboards/db", json={
                "dashboard": new, "folderUid": folder_uid, "overwrite": True,
                "message": f"eeg-bridge: channels of stream {stream_id}",
            })
            _check(saved, "save")
            return int(saved.json().get("version", 0))
    except httpx.HTTPError as exc:
        raise DashboardSyncError(f"cannot reach Grafana at {base} ({type(exc).__name__}).") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DashboardSyncError("Grafana's dashboard answer was not the JSON expected.") from None


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code == 200:
        return
    try:
        message = str(response.json().get("message", ""))[:200]
    except ValueError:
        message = response.reason_phrase
    hint = {
        400: " (Grafana refused the bridge's own live dashboard)",
        401: " (the token is not valid)",
        403: " (the token's role may not save dashboards: Editor or Admin)",
    }.get(response.status_code, "")
    raise DashboardSyncError(f"Grafana answered {response.status_code} to the dashboard {what}: {message}{hint}.")
