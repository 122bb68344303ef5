"""A synthetic EEG outlet, so anyone can try the bridge (and its dashboards) without an amplifier.

The signal has the features a spectrogram should make visible: a 1/f background, a posterior
alpha rhythm (~10 Hz) that waxes and wanes every few seconds, a little beta, and mains line
noise. Values are in microvolts. Samples are pushed in small chunks paced by ``local_clock``
with exact per-sample timestamps, as a well-behaved amplifier driver would.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import pylsl

log = logging.getLogger(__name__)

#: 10-20 / 10-10 labels, frontal to occipital, enough for 64 channels.
LABELS_1020 = (
    "Fp1 Fp2 F7 F3 Fz F4 F8 FC5 FC1 FC2 FC6 T7 C3 Cz C4 T8 CP5 CP1 CP2 CP6 P7 P3 Pz P4 P8 PO9 O1 Oz O2 PO10 "
    "AF7 AF3 AF4 AF8 F5 F1 F2 F6 FT9 FT7 FC3 FC4 FT8 FT10 C5 C1 C2 C6 TP7 CP3 CPz CP4 TP8 P5 P1 P2 P6 PO7 "
    "PO3 POz PO4 PO8 Iz FCz"
).split()

# Paul Kellet's "economy" pinking filter: white noise -> ~1/f power, cheap and stateful.
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


@dataclass(frozen=True)
class SimulatorSettings:
    name: str = "SimEEG"
    type: str = "EEG"
    source_id: str = "eeg-bridge-simulator"
    channels: int = 32
    rate: float = 500.0
    line_hz: float = 50.0
    chunk_ms: float = 20.0
    seed: int | None = None


def channel_labels(count: int) -> list[str]:
    return [LABELS_1020[i] if i < len(LABELS_1020) else f"E{i + 1}" for i in range(count)]


def make_info(settings: SimulatorSettings) -> pylsl.StreamInfo:
    info = pylsl.StreamInfo(
        settings.name, settings.type, settings.channels, settings.rate, "float32", settings.source_id
    )
    channels = info.desc().append_child("channels")
    for label in channel_labels(settings.channels):
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        channel.append_child_value("unit", "microvolts")
        channel.append_child_value("type", "EEG")
    info.desc().append_child("acquisition").append_child_value("manufacturer", "eeg-bridge simulator")
    return info


class EegSignal:
    """Generates consecutive blocks of the synthetic signal (continuous across calls)."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self._rng = np.random.default_rng(settings.seed)
        self._n = 0
        self._zi = np.zeros((settings.channels, _PINK_A.size - 1))
        labels = channel_labels(settings.channels)
        posterior = np.array([lab.startswith(("O", "P", "I")) for lab in labels], dtype=float)
        self._alpha_gain = 3.0 + 25.0 * posterior  # µV: posterior alpha stands ~15 dB above the background
        self._alpha_hz = 9.5 + self._rng.uniform(-0.5, 0.5, settings.channels) + posterior
        self._phase = self._rng.uniform(0, 2 * np.pi, settings.channels)

    def block(self, count: int) -> np.ndarray:
        s = self.settings
        t = (self._n + np.arange(count)) / s.rate
        self._n += count
        import scipy.signal  # noqa: PLC0415 - only the simulator needs it; the bridge stays lean

        white = self._rng.standard_normal((s.channels, count))
        pink, self._zi = scipy.signal.lfilter(_PINK_B, _PINK_A, white, axis=1, zi=self._zi)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * t / 8.0) ** 2  # waxes and wanes over ~8 s
        alpha = self._alpha_gain[:, None] * envelope * np.sin(2 * np.pi * self._alpha_hz[:, None] * t + self._phase[:, None])
        beta = 3.0 * np.sin(2 * np.pi * 21.0 * t + self._phase[:, None])
        line = 3.0 * np.sin(2 * np.pi * s.line_hz * t)
        return (250.0 * pink + alpha + beta + line).T.astype(np.float32)


def run(settings: SimulatorSettings, stop: threading.Event, *, duration: float | None = None) -> int:
    """Publish until ``stop`` is set (or ``duration`` seconds); return samples pushed."""
    outlet = pylsl.StreamOutlet(make_info(settings), chunk_size=0, max_buffered=60)
    signal = EegSignal(settings)
    period = settings.chunk_ms / 1000.0
    start = pylsl.local_clock()
    pushed = 0
    log.info(
        "simulating '%s' (type %s, source_id %s): %d channels at %g Hz",
        settings.name, settings.type, settings.source_id, settings.channels, settings.rate,
    )
    while not stop.is_set():
        now = pylsl.local_clock()
        if duration is not None and now - start >= duration:
            break
        due = int((now - start) * settings.rate) + 1 - pushed
        if due > 0:
            block = signal.block(due)
            stamps = start + (pushed + np.arange(due)) / settings.rate
            outlet.push_chunk(block, stamps.tolist())
            pushed += due
        stop.wait(period)
    return pushed
