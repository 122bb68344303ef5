"""The live overview: band power and quality pushed to Grafana Live, one measurement per band.

Frames are built here with band_db/quality set (as the engine fills them, docs/data-model.md) and
pushed by the real Grafana sink to the stand-in; what a browser receives is checked field by field.
"""

from __future__ import annotations

import numpy as np
from pydantic import SecretStr

from bridge.config import GrafanaSettings, TlsSettings
from bridge.frame import Band, ChannelQuality, FrameLayout, SpectrumFrame
from bridge.observe.metrics import Metrics
from bridge.sinks.grafana_live import GrafanaLiveSink
from tests.fixtures_grafana import EDITOR_TOKEN, grafana_live, grafana_live_factory  # noqa: F401
from tests.grafana_standin import GrafanaLiveStandIn, live_channel

BANDS = (Band("delta", 1, 4), Band("theta", 4, 8), Band("alpha", 8, 13), Band("beta", 13, 30), Band("gamma", 30, 45))
CHANNELS = tuple(f"E{i}" for i in range(1, 257))


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
