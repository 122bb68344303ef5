"""What the live dashboard and the bridge must agree on, in one place (standard library only).

``dashboards/generate.py`` loads this file by path (it runs before anything is installed) to build
the provisioned live dashboard; the Grafana sink uses it to keep that dashboard current through
Grafana's API (``bridge/sinks/grafana_dashboard.py``). Numbers follow Grafana's source:

- Centrifuge refuses a client's subscriptions past ``ClientChannelLimit``, "Zero value means 128"
  (centrifugal/centrifuge ``Config``); Grafana does not set it. One browser tab showing the live
  dashboard is one client: every Live panel's channel counts once.
- The browser keeps ``maxDataPoints`` rows per Live channel and trims to the dashboard's time span
  (packages/grafana-data StreamingDataFrame ``maxLength`` / ``maxDelta``): the panels' Max data
  points must hold the window at the frame rate, :func:`live_buffer_rows`.
"""

import hashlib
import math
from typing import Any, Sequence

LIVE_DASHBOARD_UID = "eeg-live-spectrogram"
#: Custom variable listing the stream's channels; the bridge writes its values.
CHANNEL_VARIABLE = "channel"
#: Text-box variable holding GRAFANA_STREAM_ID.
STREAM_ID_VARIABLE = "live_stream"
DEFAULT_STREAM_ID = "eeg"
#: The live dashboard's time window (now-2m .. now).
LIVE_WINDOW_SEC = 120
#: Centrifuge's default per-client channel limit, which Grafana keeps.
CLIENT_CHANNEL_LIMIT = 128
#: Channels with a detail spectrogram when the dashboard opens: the overview's 6 subscriptions plus
#: these stay far under CLIENT_CHANNEL_LIMIT, and 8 heatmaps of 129 bins still render smoothly.
DETAIL_CHANNELS_DEFAULT = 8
#: The default SPECTRUM_BANDS (docs/data-model.md); one overview heatmap each.
DEFAULT_BANDS = ("delta", "theta", "alpha", "beta", "gamma")
#: Frame rate the provisioned JSON is sized for before the bridge first updates it: 1 kHz with a
#: 32-sample hop (31.25 frames/s) and anything slower.
PROVISIONED_FRAME_RATE_HZ = 1000 / 32
#: A row pushed in place of a missing frame carries this value: it is at or below the panels'
#: ``filterValues.le``, so the heatmap leaves the cell empty instead of stretching its neighbours.
FILL_DB = -1e9
#: The quality state pushed in place of a missing frame (no value mapping: drawn empty).
FILL_STATE = -1


#: Title of the provisioned live dashboard's link to the bridge's own copy (GetHomeDashboard serves
#: the provisioned file as the home page, so the home page must lead to the copy).
OWNED_DASHBOARD_LINK_TITLE = "Live dashboard of this stream (kept current by eeg-bridge)"


def owned_dashboard_uid(stream_id: str) -> str:
    """Uid of the live dashboard the bridge of ``stream_id`` owns and saves (Grafana allows 40 characters).

    Stream ids up to 19 characters give ``eeg-live-spectrogram-<stream id>``, which the provisioned
    dashboard's link names; longer ones a hash (the link then misses, the EEG dropdown still lists it).
    """
    uid = f"{LIVE_DASHBOARD_UID}-{stream_id}"
    if len(uid) <= 40:
        return uid
    return f"{LIVE_DASHBOARD_UID}-{hashlib.sha256(stream_id.encode()).hexdigest()[:18]}"


def owned_dashboard_link() -> dict[str, Any]:
    """The provisioned live dashboard's link to the bridge's copy for the stream id in its box."""
    return {
        "title": OWNED_DASHBOARD_LINK_TITLE,
        "type": "link",
        "url": f"/d/{LIVE_DASHBOARD_UID}-${{{STREAM_ID_VARIABLE}}}",
        "icon": "dashboard",
        "tooltip": "The copy of this dashboard that eeg-bridge keeps current with the stream's channels",
        "asDropdown": False,
        "includeVars": False,
        "keepTime": True,
        "targetBlank": False,
        "tags": [],
    }


def live_buffer_rows(frame_rate_hz: float, window_sec: float = LIVE_WINDOW_SEC) -> int:
    """Max data points that keep ``window_sec`` of rows at ``frame_rate_hz``: rate x window x 1.25,
    rounded up to 100. The 25 % margin absorbs timing jitter; the browser trims to the window anyway."""
    return 100 * math.ceil(frame_rate_hz * window_sec * 1.25 / 100)


def overview_subscriptions(bands: Sequence[str] = DEFAULT_BANDS) -> int:
    """Live channels the overview row holds: one per band plus quality."""
    return len(bands) + 1


#: Subscriptions the dashboard page holds itself: dashboardWatcher.ts
#: (public/app/features/live/dashboard/) subscribes to grafana/dashboard/uid/<uid> to learn of saves.
DASHBOARD_PAGE_SUBSCRIPTIONS = 1


def max_detail_channels(bands: Sequence[str] = DEFAULT_BANDS) -> int:
    """Detail spectrograms one browser can show before Centrifuge refuses subscriptions.

    128 per client, less the overview's band and quality channels, less the page's own
    dashboard-watcher subscription: 121 with the default five bands.
    """
    return CLIENT_CHANNEL_LIMIT - overview_subscriptions(bands) - DASHBOARD_PAGE_SUBSCRIPTIONS


def channel_variable(channels: Sequence[str], selected: int = DETAIL_CHANNELS_DEFAULT) -> dict[str, Any]:
    """The custom ``$channel`` variable for ``channels``, the first ``selected`` of them chosen.

    A custom variable needs no datasource, so the live panels show with InfluxDB down, empty or not
    configured. No "All" option: all 256 channels of a large montage would exceed the limit above.
    Channel names are restricted to ``[A-Za-z0-9_-]`` by the bridge, so the comma list is safe.
    """
    chosen = list(channels[:selected])
    return {
        "name": CHANNEL_VARIABLE,
        "label": "Detail channels",
        "type": "custom",
        "query": ",".join(channels),
        "multi": True,
        "includeAll": False,
        "current": {"selected": True, "text": chosen, "value": chosen},
        "options": [{"selected": c in chosen, "text": c, "value": c} for c in channels],
        "hide": 0,
        "description": (
            f"Kept current by eeg-bridge. Each selected channel is one Grafana Live subscription; one browser "
            f"may hold {CLIENT_CHANNEL_LIMIT}, the overview uses {overview_subscriptions()} and the page itself "
            f"{DASHBOARD_PAGE_SUBSCRIPTIONS}."
        ),
    }
