"""The live overview: band power and quality pushed to Grafana Live, one measurement per band.

Frames are built here with band_db/quality set (as the engine fills them, docs/data-model.md) and
pushed by the real Grafana sink to the stand-in; what a browser receives is checked field by field.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import httpx
import numpy as np
import yaml
from pydantic import SecretStr

from bridge.config import GrafanaSettings, TlsSettings
from bridge.frame import Band, ChannelQuality, FrameLayout, SpectrumFrame
from bridge.observe.metrics import Metrics
from bridge.sinks import grafana_layout
from bridge.sinks.grafana_dashboard import owned_dashboard_uid
from bridge.sinks.grafana_live import GrafanaLiveSink
from tests.bridge_process import wait_until
from tests.fixtures_grafana import ADMIN_PASSWORD, ADMIN_USER, EDITOR_TOKEN, grafana_live, grafana_live_factory  # noqa: F401
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.grafana_standin import CLIENT_CHANNEL_LIMIT, GrafanaLiveStandIn, live_channel, render_dashboard

BANDS = (Band("delta", 1, 4), Band("theta", 4, 8), Band("alpha", 8, 13), Band("beta", 13, 30), Band("gamma", 30, 45))
CHANNELS = tuple(f"E{i}" for i in range(1, 257))
#: The live dashboard the bridge of stream "eeg" owns and keeps current (the provisioned one is its template).
OWNED = owned_dashboard_uid("eeg")


def _frame(layout: FrameLayout, seq: int, band_db: np.ndarray | None, state: np.ndarray | None) -> SpectrumFrame:
    quality = None
    if state is not None:
        n = len(layout.channels)
        quality = ChannelQuality(state.astype(np.int8), np.zeros(n, np.uint8), np.full((5, n), np.nan, np.float32))
    t = (1_700_000_000 + seq) * 10**9
    return SpectrumFrame(layout, seq, t, t, np.zeros(layout.shape, np.float32), band_db=band_db, quality=quality)


def _sink(standin: GrafanaLiveStandIn) -> GrafanaLiveSink:
    settings = GrafanaSettings(standin.url, None, "eeg", "http", None, None, 5.0, 64, TlsSettings(None, False))
    return GrafanaLiveSink(settings, Metrics().sink("grafana"), token=SecretStr(EDITOR_TOKEN))


def test_band_and_quality_lines_ride_in_the_spectra_push(grafana_live: GrafanaLiveStandIn) -> None:
    layout = FrameLayout("s", CHANNELS, np.array([1.0, 2.0]), 500.0, BANDS)
    rng = np.random.default_rng(3)
    band_db = rng.uniform(-5, 35, (len(BANDS), len(CHANNELS))).astype(np.float32)
    state = rng.integers(0, 3, len(CHANNELS))
    sink = _sink(grafana_live)
    sink.start()
    try:
        sink.offer(_frame(layout, 1, band_db, state))
        grafana_live.wait_for(lambda: grafana_live.last_frame(live_channel("eeg", "quality")), what="quality frame")
    finally:
        sink.close(5)
    (request,) = grafana_live.requests()  # spectra, bands and quality in one push
    assert request.status == 200
    assert grafana_live.last_frame(live_channel("eeg", "E1")) is not None
    for b, band in enumerate(BANDS):
        frame = grafana_live.last_frame(live_channel("eeg", f"band_{band.name}"))
        assert frame is not None
        names = [f.name for f in frame.fields[2:]]
        assert names == sorted(CHANNELS)  # Grafana's converter sorts fields by name
        for ch_index, channel in enumerate(CHANNELS):
            assert frame.column(channel) == (float(f"{band_db[b, ch_index]:.3f}"),)
    quality = grafana_live.last_frame(live_channel("eeg", "quality"))
    assert quality is not None
    assert [quality.column(c)[0] for c in CHANNELS] == [float(s) for s in state]


def test_frames_without_bands_push_spectra_only(grafana_live: GrafanaLiveStandIn) -> None:
    layout = FrameLayout("s", ("Fz", "Cz"), np.array([1.0, 2.0]), 500.0, BANDS)
    sink = _sink(grafana_live)
    sink.start()
    try:
        sink.offer(_frame(layout, 1, None, None))
        grafana_live.wait_for(lambda: grafana_live.last_frame(live_channel("eeg", "Cz")), what="spectra")
    finally:
        sink.close(5)
    assert set(grafana_live.frames_published()) == {live_channel("eeg", "Fz"), live_channel("eeg", "Cz")}


# ---- the live dashboard in a browser, with and without InfluxDB ------------------------------------


ROOT = Path(__file__).resolve().parents[1]
LIVE_JSON = ROOT / "dashboards" / "eeg-live-spectrogram.json"
PERIOD_NS = 32_000_000  # 1 kHz, hop 32: 31.25 frames/s


def _live_board() -> dict:
    return json.loads(LIVE_JSON.read_text(encoding="utf-8"))


def _allow_ui_updates() -> bool:
    (provider,) = yaml.safe_load((ROOT / "provisioning" / "dashboards" / "eeg-bridge.yaml").read_text())["providers"]
    return bool(provider["allowUiUpdates"])


def _influxdb_down(_variable: object) -> None:
    return None  # the datasource request failed


def _run_frames(standin: GrafanaLiveStandIn, layout: FrameLayout, times_ns: list[int], *, bands: bool) -> None:
    sink = _sink(standin)
    sink.start()
    try:
        n = len(layout.channels)
        for seq, t in enumerate(times_ns):
            band_db = np.full((len(BANDS), n), 10.0, np.float32) if bands else None
            state = np.zeros(n) if bands else None
            frame = _frame(layout, seq, band_db, state)
            sink.offer(SpectrumFrame(layout, seq, t, t, frame.power_db, band_db=frame.band_db, quality=frame.quality))
            last = live_channel("eeg", layout.channels[0])
            standin.wait_for(lambda t=t: any(r.time_ns == t for r in standin.browser_rows(last)), what=f"frame {seq}")
    finally:
        sink.close(5)


def test_live_dashboard_shows_256_channels_live_with_influxdb_down(
    grafana_live_factory,  # noqa: F811
) -> None:
    standin = grafana_live_factory()
    standin.provision_dashboard(_live_board(), allow_ui_updates=_allow_ui_updates())
    layout = FrameLayout("s", CHANNELS, np.array([1.0, 2.0]), 1000.0, BANDS)
    times = [1_700_000_000 * 10**9 + k * PERIOD_NS for k in range(6)]
    _run_frames(standin, layout, times, bands=True)
    standin.wait_for(
        lambda: "E1" in json.dumps(standin.dashboard(OWNED)["templating"]),
        timeout=30, what="the bridge's update of the live dashboard",
    )
    view = standin.open_dashboard(OWNED, query_variable=_influxdb_down)
    live = view.live_panels()
    detail = [p for p in live if p.title.endswith(": live")]
    assert [p.title for p in detail] == [f"{c}: live" for c in CHANNELS[: grafana_layout.DETAIL_CHANNELS_DEFAULT]]
    assert all(p.shows_data for p in live)
    subscribed = view.subscriptions()
    assert len(subscribed) == 6 + grafana_layout.DETAIL_CHANNELS_DEFAULT <= CLIENT_CHANNEL_LIMIT
    # every one of the 256 channels is on the overview: the band frames carry them all
    for band in BANDS:
        frame = standin.last_frame(live_channel("eeg", f"band_{band.name}"))
        assert frame is not None and {f.name for f in frame.fields[2:]} == set(CHANNELS)
    # and the buffer holds the window at the measured frame rate (31.25 frames/s)
    expected_rows = grafana_layout.live_buffer_rows(1e9 / PERIOD_NS)
    assert {p.max_data_points for p in live} == {expected_rows}
    assert expected_rows >= grafana_layout.LIVE_WINDOW_SEC * 1e9 / PERIOD_NS


def test_the_committed_dashboard_alone_shows_the_overview_without_influxdb() -> None:
    view = render_dashboard(_live_board(), query_variable=_influxdb_down)
    showing = [p.title for p in view.live_panels() if p.shows_data]
    assert showing == [f"{b} power, every channel" for b in grafana_layout.DEFAULT_BANDS] + [
        "Signal quality, every channel"
    ]
    # until the bridge lists the channels, the detail row is Grafana's empty placeholder instance
    assert [p.title for p in view.live_panels() if not p.shows_data] == [": live"]


def test_selecting_every_channel_of_256_passes_the_client_limit() -> None:
    """Why the detail selection is bounded: Centrifuge refuses the 129th channel of a client."""
    board = _live_board()
    variable = grafana_layout.channel_variable(list(CHANNELS), selected=len(CHANNELS))
    board["templating"]["list"] = [variable if v["name"] == "channel" else v for v in board["templating"]["list"]]
    view = render_dashboard(board, query_variable=_influxdb_down)
    refused = [p for p in view.live_panels() if not p.shows_data]
    # the page's own dashboardWatcher subscription (grafana/dashboard/uid/<uid>) takes one of the 128
    assert len(refused) == 6 + 256 - (CLIENT_CHANNEL_LIMIT - 1)
    assert grafana_layout.max_detail_channels() == 121


def test_the_largest_allowed_detail_selection_shows_every_panel() -> None:
    """max_detail_channels() detail spectrograms, the overview and the dashboard watcher fit in 128."""
    board = _live_board()
    limit = grafana_layout.max_detail_channels()
    variable = grafana_layout.channel_variable(list(CHANNELS), selected=limit)
    board["templating"]["list"] = [variable if v["name"] == "channel" else v for v in board["templating"]["list"]]
    view = render_dashboard(board, query_variable=_influxdb_down)
    assert [p.title for p in view.live_panels() if not p.shows_data] == []
    assert len(view.subscriptions()) == 6 + 121


def test_a_dropped_frame_keeps_every_cell_one_frame_wide(grafana_live: GrafanaLiveStandIn) -> None:  # noqa: F811
    layout = FrameLayout("s", ("Fz", "Cz"), np.array([1.0, 2.0]), 1000.0, BANDS)
    t0 = 1_700_000_000 * 10**9
    times = [t0 + k * PERIOD_NS for k in (0, 1, 2, 3, 5, 6)]  # frame 4 never arrives
    _run_frames(grafana_live, layout, times, bands=True)
    panel_le = next(p for p in _live_board()["panels"] if p["type"] == "heatmap")["options"]["filterValues"]["le"]
    for measurement in ("Fz", "band_alpha"):
        rows = grafana_live.browser_rows(live_channel("eeg", measurement))
        stamps = [r.time_ns for r in rows]
        assert stamps == [t0 + k * PERIOD_NS for k in range(7)], measurement
        # the heatmap's cell width is the gap between its first two rows: one frame, wherever the drop is
        assert rows[1].time_ms - rows[0].time_ms == PERIOD_NS // 10**6
        filler = {k: v for k, v in rows[4].values.items() if k != "labels"}
        assert filler and all(v is not None and v <= panel_le for v in filler.values()), "drawn empty"
    quality = grafana_live.browser_rows(live_channel("eeg", "quality"))
    assert {v for k, v in quality[4].values.items() if k != "labels"} == {float(grafana_layout.FILL_STATE)}


def test_dashboard_sync_only_reads_a_locked_provisioned_dashboard(grafana_live: GrafanaLiveStandIn) -> None:  # noqa: F811
    """The provisioned dashboard is the template: locked (allowUiUpdates false) or not, it is never saved."""
    from bridge.sinks.grafana_dashboard import sync_live_dashboard

    grafana_live.provision_dashboard(_live_board(), allow_ui_updates=False, folder_uid="eeg-folder")
    assert sync_live_dashboard(grafana_live.url, SecretStr(EDITOR_TOKEN), "eeg", ["Fz"], 4.0) == 1
    response = httpx.get(f"{grafana_live.url}/api/dashboards/uid/{grafana_layout.LIVE_DASHBOARD_UID}",
                         headers={"Authorization": f"Bearer {EDITOR_TOKEN}"})
    assert "Fz" not in json.dumps(response.json()["dashboard"]["templating"])
    assert response.json()["meta"]["provisioned"] is True and response.json()["dashboard"]["version"] == 1
    assert grafana_live.dashboard_folder(OWNED) == "eeg-folder"
    assert grafana_live.dashboard_reloads(grafana_layout.LIVE_DASHBOARD_UID) == 0


# ---- the whole bridge: no InfluxDB at all, only an admin login for Grafana ------------------------


def test_bridge_without_influxdb_fills_the_live_dashboard(grafana_live, bridges, players, tmp_path) -> None:  # noqa: F811
    """InfluxDB not configured at all: the bridge mints its Editor token, pushes spectra, bands and
    quality, and writes its channels into the live dashboard, which then shows every channel live."""
    grafana_live.provision_dashboard(_live_board(), allow_ui_updates=_allow_ui_updates())
    labels = [f"E{i}" for i in range(1, 21)]
    fs = 250.0
    name = unique("overview")
    outlet = make_outlet(name, channels=len(labels), rate=fs, labels=labels)
    process = bridges({
        "LSL_STREAM_NAME": name, "GRAFANA_URL": grafana_live.url, "GRAFANA_ADMIN_USER": ADMIN_USER,
        "GRAFANA_ADMIN_PASSWORD": ADMIN_PASSWORD, "GRAFANA_QUEUE_FRAMES": "1000", "INFLUXDB_URL": "",
        "SPECTRUM_NPERSEG": "64", "SPECTRUM_NOVERLAP": "32", "SPOOL_DIR": str(tmp_path / "spool"),
    })
    process.wait_for_output("connected to")
    rng = np.random.default_rng(5)
    player = Player(outlet, rng.normal(0, 10, (1600, len(labels))), fs, chunk=16)
    players.append(player)
    player.start()
    assert player.done.wait(60)

    def listed() -> bool:
        board = grafana_live.dashboard(OWNED) or {}
        return "E20" in json.dumps(board.get("templating", {}))

    wait_until(listed, 60, process.output)
    view = grafana_live.open_dashboard(OWNED, query_variable=_influxdb_down)
    live = view.live_panels()
    assert [p.title for p in live if p.title.endswith(": live")] == [f"E{i}: live" for i in range(1, 9)]
    assert all(p.shows_data for p in live)
    for channel in view.subscriptions():
        assert grafana_live.browser_rows(channel), f"nothing pushed on {channel}"
    alpha = grafana_live.last_frame(live_channel("eeg", "band_alpha"))
    assert alpha is not None and {f.name for f in alpha.fields[2:]} == set(labels)
    (account,) = grafana_live.service_accounts()
    assert account["role"] == "Editor" and len(account["token_list"]) == 1
    assert process.terminate() == 0


def _offer_and_wait(standin: GrafanaLiveStandIn, sink: GrafanaLiveSink, layout: FrameLayout, k: int) -> None:
    t = 1_700_000_000 * 10**9 + k * PERIOD_NS
    frame = _frame(layout, k, np.full((len(BANDS), 2), 10.0, np.float32), np.zeros(2))
    sink.offer(SpectrumFrame(layout, k, t, t, frame.power_db, band_db=frame.band_db, quality=frame.quality))
    standin.wait_for(lambda: any(r.time_ns == t for r in standin.browser_rows(live_channel("eeg", "Fz"))),
                     what=f"frame {k}")


def test_a_frame_whose_push_failed_is_filled_in(grafana_live: GrafanaLiveStandIn) -> None:  # noqa: F811
    layout = FrameLayout("s", ("Fz", "Cz"), np.array([1.0, 2.0]), 1000.0, BANDS)
    sink = _sink(grafana_live)
    sink.start()
    try:
        for k in range(4):
            _offer_and_wait(grafana_live, sink, layout, k)
        grafana_live.set_mode("error_5xx", status=503)
        t4 = 1_700_000_000 * 10**9 + 4 * PERIOD_NS
        frame = _frame(layout, 4, None, None)
        sink.offer(SpectrumFrame(layout, 4, t4, t4, frame.power_db))
        grafana_live.wait_for(lambda: grafana_live.status_counts()[503] >= 1, what="the failed push")
        grafana_live.set_mode("ok")
        _offer_and_wait(grafana_live, sink, layout, 5)
    finally:
        sink.close(5)
    rows = grafana_live.browser_rows(live_channel("eeg", "Fz"))
    t0 = 1_700_000_000 * 10**9
    assert [r.time_ns for r in rows] == [t0 + k * PERIOD_NS for k in range(6)]
    assert rows[4].values["001.00"] == grafana_layout.FILL_DB


def test_a_long_gap_fills_only_the_slots_before_the_new_frame(grafana_live: GrafanaLiveStandIn,  # noqa: F811
                                                              monkeypatch) -> None:
    from bridge.sinks import grafana_live as live_module

    layout = FrameLayout("s", ("Fz", "Cz"), np.array([1.0, 2.0]), 1000.0, BANDS)
    filler_bytes = len(live_module._Fillers(layout).spectra([10**18]))
    monkeypatch.setattr(live_module, "FILL_BUDGET_BYTES", 10 * filler_bytes)  # a few rows' worth
    limit = live_module._Fillers(layout).limit
    assert 1 <= limit < 36
    sink = _sink(grafana_live)
    sink.start()
    try:
        for k in (0, 1, 2, 3, 40):
            _offer_and_wait(grafana_live, sink, layout, k)
    finally:
        sink.close(5)
    t0 = 1_700_000_000 * 10**9
    rows = grafana_live.browser_rows(live_channel("eeg", "Fz"))
    expected = [0, 1, 2, 3, *range(40 - limit, 40), 40]
    assert [r.time_ns for r in rows] == [t0 + k * PERIOD_NS for k in expected]
    last_push = [r for r in grafana_live.requests() if r.target.startswith("/api/live/push/")][-1]
    assert len(last_push.body) < 2 * 10 * filler_bytes + 10_000  # bounded, not 36 rows of placeholders


def test_a_failed_dashboard_update_is_tried_again(grafana_live: GrafanaLiveStandIn, monkeypatch) -> None:  # noqa: F811
    """Grafana without the dashboard at first (provisioning not read yet): the bridge tries again."""
    from bridge.sinks import grafana_live as live_module

    monkeypatch.setattr(live_module, "SYNC_RETRY_SEC", 0.2)
    layout = FrameLayout("s", ("Fz", "Cz"), np.array([1.0, 2.0]), 1000.0, BANDS)
    sink = _sink(grafana_live)
    sink.start()
    try:
        for k in range(5):
            _offer_and_wait(grafana_live, sink, layout, k)
        grafana_live.wait_for(
            lambda: any(r.target.startswith("/api/dashboards/uid/") and r.status == 404 for r in grafana_live.requests()),
            what="the first, failed update",
        )
        grafana_live.provision_dashboard(_live_board(), allow_ui_updates=True)
        k = 5

        def updated() -> bool:
            nonlocal k
            _offer_and_wait(grafana_live, sink, layout, k)
            k += 1
            board = grafana_live.dashboard(OWNED) or {}
            return "Cz" in json.dumps(board.get("templating", {}))

        grafana_live.wait_for(updated, timeout=30, what="the dashboard update after the retry")
    finally:
        sink.close(5)


# ---- the live dashboard against Grafana's provisioner and dashboard watcher (issue 17, point 5) ----

#: The provider's folder (provisioning/dashboards/eeg-bridge.yaml, folder: EEG), as Grafana names it.
EEG_FOLDER = "eeg-folder-uid"


def _sync(standin: GrafanaLiveStandIn, channels: list[str]) -> int:
    from bridge.sinks.grafana_dashboard import sync_live_dashboard

    return sync_live_dashboard(standin.url, SecretStr(EDITOR_TOKEN), "eeg", channels, 31.25)


def _detail_options(board: dict | None) -> list[str]:
    (variable,) = [v for v in (board or {})["templating"]["list"] if v["name"] == "channel"]
    return [o["value"] for o in variable["options"]]


def test_the_provisioner_does_not_undo_the_live_dashboard(grafana_live: GrafanaLiveStandIn) -> None:  # noqa: F811
    """file_reader.go's "fix empty folder_uid" re-saves a provisioned file's dashboard found in the root
    folder: the bridge must leave the provisioned dashboard where (and as) the file put it."""
    grafana_live.provision_dashboard(_live_board(), allow_ui_updates=True, folder_uid=EEG_FOLDER)
    _sync(grafana_live, ["Fz", "Cz"])
    assert grafana_live.run_provisioner() == []  # updateIntervalSeconds later: nothing to put back
    assert grafana_live.dashboard_folder(grafana_layout.LIVE_DASHBOARD_UID) == EEG_FOLDER
    owned = "eeg-live-spectrogram-eeg"
    assert _detail_options(grafana_live.dashboard(owned)) == ["Fz", "Cz"]
    assert grafana_live.dashboard_folder(owned) == EEG_FOLDER
    view = grafana_live.open_dashboard(owned, query_variable=_influxdb_down)
    assert [p.title for p in view.live_panels() if p.title.endswith(": live")] == ["Fz: live", "Cz: live"]
    assert max(p.max_data_points or 0 for p in view.live_panels()) == grafana_layout.live_buffer_rows(31.25)


def test_a_restart_with_the_same_layout_reloads_no_viewer(grafana_live: GrafanaLiveStandIn) -> None:  # noqa: F811
    """Every save publishes on grafana/dashboard/uid/<uid> and dashboardWatcher.ts reloads each open page:
    three bridge starts with one layout save once; a new channel list saves once more."""
    grafana_live.provision_dashboard(_live_board(), allow_ui_updates=True, folder_uid=EEG_FOLDER)
    versions = [_sync(grafana_live, ["Fz", "Cz"]) for _ in range(3)]
    owned = "eeg-live-spectrogram-eeg"
    assert versions == [1, 1, 1]
    assert grafana_live.dashboard_reloads(owned) == 1
    assert grafana_live.dashboard_reloads(grafana_layout.LIVE_DASHBOARD_UID) == 0
    assert _sync(grafana_live, ["Fz", "Cz", "Pz"]) == 2
    assert grafana_live.dashboard_reloads(owned) == 2


def test_an_editor_who_may_not_create_in_the_root_folder_still_syncs(grafana_live_factory) -> None:  # noqa: F811
    """A save without folderUid goes to the root folder (GetDashboardModel), refused 403 where Editors
    may not create there; the bridge saves into the provisioned dashboard's folder instead."""
    standin = grafana_live_factory(editors_may_create_in_root=False)
    standin.provision_dashboard(_live_board(), allow_ui_updates=True, folder_uid=EEG_FOLDER)
    assert _sync(standin, ["Fz"]) == 1
    assert standin.status_counts()[403] == 0
    assert _detail_options(standin.dashboard("eeg-live-spectrogram-eeg")) == ["Fz"]


def test_scaling_doc_states_grafanas_live_limits() -> None:
    """docs/scaling.md gives the detail limit the code enforces and Grafana's per-instance connection cap."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text(encoding="utf-8")
    assert f"{grafana_layout.max_detail_channels()} at most" in text
    assert "`[live] max_connections` (default **100**" in text
    assert "122" not in text


def test_the_home_page_leads_to_the_dashboard_the_bridge_keeps_current(grafana_live_factory) -> None:  # noqa: F811
    """GetHomeDashboard (pkg/api/dashboard.go) serves default_home_dashboard_path from disk, never what
    the API saved: the compose stack's home page is the provisioned file, so that file must link to the
    bridge's own copy, and the copy must list the stream's channels."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    standin = grafana_live_factory(home_dashboard_path=str(ROOT / "dashboards" / Path(home).name))
    standin.provision_dashboard(_live_board(), allow_ui_updates=_allow_ui_updates(), folder_uid=EEG_FOLDER)
    _sync(standin, ["Fz", "Cz"])
    page = httpx.get(f"{standin.url}/api/dashboards/home", headers={"Authorization": f"Bearer {EDITOR_TOKEN}"},
                     timeout=10).json()["dashboard"]
    assert "Fz" not in json.dumps(page["templating"])  # the file, as Grafana serves it
    (stream,) = [v["current"]["value"] for v in page["templating"]["list"] if v["name"] == "live_stream"]
    urls = [link["url"].replace("${live_stream}", stream) for link in page["links"] if link["type"] == "link"]
    assert urls == ["/d/eeg-live-spectrogram-eeg"]
    owned = standin.dashboard("eeg-live-spectrogram-eeg")
    assert _detail_options(owned) == ["Fz", "Cz"]
    assert [link["type"] for link in (owned or {})["links"]] == ["dashboards"]  # no link to itself
