"""Real LSL outlets on loopback for the tests (never a mocked pylsl)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pylsl
import pytest


def unique(prefix: str = "test") -> str:
    """Outlets from other tests (or runs) are visible on loopback: every test uses fresh names."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_outlet(
    name: str,
    *,
    channels: int = 4,
    rate: float = 250.0,
    fmt: str = "float32",
    type_: str = "EEG",
    source_id: str = "",
    labels: Sequence[str] | None = None,
    frequencies: Sequence[float] | None = None,
) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, type_, channels, rate, fmt, source_id)
    if labels is not None:
        chans = info.desc().append_child("channels")
        for label in labels:
            chans.append_child("channel").append_child_value("label", label)
    if frequencies is not None:
        info.desc().append_child_value("frequencies", ",".join(f"{f:g}" for f in frequencies))
    return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)


@dataclass
class Player:
    """Pushes ``data`` (samples x channels) into an outlet in real time with exact timestamps.

    The timestamps it used (LSL local_clock seconds) are kept so tests can compare frame times
    with an independent computation. ``loop=True`` repeats the data until stopped.
    """

    outlet: pylsl.StreamOutlet
    data: np.ndarray
    rate: float
    chunk: int = 10
    loop: bool = False
    start_time: float = 0.0
    pushed: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Player:
        self.start_time = pylsl.local_clock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = self.data.shape[0]
        while not self._stop.is_set():
            if not self.loop and self.pushed >= n:
                break
            due = int((pylsl.local_clock() - self.start_time) * self.rate) + 1
            upto = due if self.loop else min(due, n)
            while self.pushed < upto:
                k = min(self.chunk, upto - self.pushed)
                idx = (self.pushed + np.arange(k)) % n
                stamps = self.start_time + (self.pushed + np.arange(k)) / self.rate
                self.outlet.push_chunk(np.ascontiguousarray(self.data[idx]), stamps.tolist())
                self.pushed += k
            self._stop.wait(min(0.01, self.chunk / self.rate))
        self.done.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def players() -> Iterator[list[Player]]:
    """Collects players started by a test and stops them even when it fails."""
    started: list[Player] = []
    yield started
    for player in started:
        player.stop()
