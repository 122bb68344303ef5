"""A real LSL outlet in the benchmark process, pushed in real time, remembering when each chunk left.

Latency is measured from the moment the *last sample of a window* was pushed, so the player
keeps (end sample index, time.time_ns() just before ``push_chunk`` was called) for every chunk;
taking the time before rather than after makes a preemption of this thread between the two count
against the bridge, never for it (the longest ``push_chunk`` call is reported too).
Timestamps are exact (``start + i / rate`` on LSL's local_clock), as a good amplifier driver
would send them, so a frame's time identifies its samples without any signal tricks.

The signal is the bridge's own simulator (1/f background, alpha, beta, mains) rendered once
and looped, so generating it costs the benchmark nothing while it measures.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pylsl

from bridge.sources.simulator import EegSignal, SimulatorSettings, make_info

pylsl.set_config_content("[log]\nlevel = -2\n")  # liblsl's INFO lines would clutter the report

#: Most drivers push every few ms to a few tens of ms; 10 ms is a middle ground.
PUSH_PERIOD_S = 0.010


def unique_name(prefix: str) -> str:
    """Other engineers' tests publish outlets on the same loopback: never share a name."""
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def eeg_block(channels: int, rate: float, seconds: float, seed: int = 1) -> np.ndarray:
    """``seconds`` of simulated EEG, samples x channels, float32 (µV)."""
    signal = EegSignal(SimulatorSettings(channels=channels, rate=rate, seed=seed))
    return signal.block(int(round(seconds * rate)))


@dataclass
class Player:
    """Pushes looped EEG into a fresh outlet until stopped; see the module docstring."""

    name: str
    channels: int
    rate: float
    loop_seconds: float = 8.0
    period_s: float = PUSH_PERIOD_S
    start_lsl: float = 0.0
    #: time.time() - local_clock(), measured when the player started (same machine as the bridge).
    clock_offset: float = 0.0
    pushed: int = 0
    late_pushes: int = 0
    #: Longest push_chunk call: the uncertainty of "the moment the sample was pushed".
    max_push_ns: int = 0
    _ends: list[int] = field(default_factory=list)
    _push_ns: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _outlet: pylsl.StreamOutlet | None = None

    def __post_init__(self) -> None:
        self._data = eeg_block(self.channels, self.rate, self.loop_seconds)
        settings = SimulatorSettings(name=self.name, channels=self.channels, rate=self.rate, source_id=self.name)
        self._outlet = pylsl.StreamOutlet(make_info(settings), chunk_size=0, max_buffered=60)

    def start(self) -> Player:
        self.clock_offset = time.time() - pylsl.local_clock()
        self.start_lsl = pylsl.local_clock()
        self._thread = threading.Thread(target=self._run, name="player", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = self._data.shape[0]
        next_wake = self.start_lsl
        while not self._stop.is_set():
            now = pylsl.local_clock()
            due = int((now - self.start_lsl) * self.rate) + 1
            k = due - self.pushed
            if k > 0:
                idx = (self.pushed + np.arange(k)) % n
                stamps = self.start_lsl + (self.pushed + np.arange(k)) / self.rate
                block = np.ascontiguousarray(self._data[idx])
                stamp_list = stamps.tolist()
                before = time.time_ns()
                self._outlet.push_chunk(block, stamp_list)  # type: ignore[union-attr]
                self.max_push_ns = max(self.max_push_ns, time.time_ns() - before)
                self.pushed = due
                self._ends.append(due)
                self._push_ns.append(before)
            next_wake += self.period_s
            delay = next_wake - pylsl.local_clock()
            if delay < -self.period_s:
                self.late_pushes += 1
                next_wake = pylsl.local_clock()
            elif delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._outlet = None  # liblsl closes the outlet when the object goes

    def push_times(self) -> tuple[np.ndarray, np.ndarray]:
        """(exclusive end sample index, push time ns) of every chunk so far."""
        m = min(len(self._ends), len(self._push_ns))
        return np.array(self._ends[:m], dtype=np.int64), np.array(self._push_ns[:m], dtype=np.int64)

    def sample_push_ns(self, sample_index: np.ndarray) -> np.ndarray:
        """When the chunk holding each sample was pushed (-1 if not pushed yet)."""
        ends, push_ns = self.push_times()
        k = np.searchsorted(ends, sample_index, side="right")
        out = np.full(sample_index.shape, -1, dtype=np.int64)
        ok = k < ends.size
        out[ok] = push_ns[k[ok]]
        return out

    def sample_index_of_unix(self, unix_s: np.ndarray) -> np.ndarray:
        """Fractional sample index of a Unix time (the bridge adds the same local->Unix offset)."""
        return (unix_s - self.clock_offset - self.start_lsl) * self.rate
