"""Chunks an application hands over (BrainFlow, a vendor SDK, MNE), without an LSL hop.

The pushing thread only appends to a bounded queue; the stream's own pipeline thread takes the
chunks from there exactly as it pulls an LSL inlet, so the spectra, the sinks, the spool and the
ledger are the same code as ``eeg-bridge run``. A full queue makes :meth:`PushedSource.push`
wait rather than drop: the caller's samples are data, and a caller faster than the bridge for
long must be told by being slowed, not by silent loss.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from bridge.sources.lsl import Chunk, StreamDescription, StreamRejected

#: Chunks waiting for the pipeline thread before ``push`` blocks.
QUEUE_CHUNKS = 256
_POLL_SEC = 0.1


class PushedSource:
    """A stream whose samples arrive by :meth:`push`; connected from the start, never lost."""

    def __init__(self, description: StreamDescription, stop: threading.Event) -> None:
        if description.srate <= 0:
            raise StreamRejected(f"stream {description.who()}: a pushed stream needs its sampling rate (srate > 0).")
        self.description: StreamDescription | None = description
        self._stop = stop
        self._queue: queue.Queue[Chunk | None] = queue.Queue(QUEUE_CHUNKS)
        self._next_time: float | None = None  # Unix time of the next sample when the caller gives none
        self._last_ts: float | None = None
        self._last_arrival = time.monotonic()
        self._closed = False

    # ---- the caller's side -----------------------------------------------------------------------
    def push(self, samples: np.ndarray, timestamps: np.ndarray | None = None) -> None:
        """Queue ``samples`` (n x channels) with Unix-time seconds per sample, or times that follow
        on from the previous chunk at the nominal rate (the first chunk ends now)."""
        assert self.description is not None
        data = np.asarray(samples, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.description.channel_count:
            raise ValueError(
                f"stream '{self.description.name}' has {self.description.channel_count} channels: push samples "
                f"as an (n, {self.description.channel_count}) array, not {data.shape}."
            )
        n = data.shape[0]
        if n == 0:
            return
        srate = self.description.srate
        if timestamps is None:
            start = self._next_time if self._next_time is not None else time.time() - (n - 1) / srate
            times = start + np.arange(n) / srate
        else:
            times = np.asarray(timestamps, dtype=np.float64)
            if times.shape != (n,):
                raise ValueError(f"timestamps must hold one time per sample ({n}), not {times.shape}.")
        self._next_time = float(times[-1]) + 1.0 / srate
        gap, restart = 0, self._last_ts is None
        if self._last_ts is not None:
            delta = float(times[0]) - self._last_ts
            if delta > max(2.0 / srate, 0.005):
                gap = max(0, int(round(delta * srate)) - 1)
            restart = delta <= 0  # times went back: no window may span the step
        self._last_ts = float(times[-1])
        chunk = Chunk(samples=data, times=times, restart=restart, gap_samples=gap)
        while not self._stop.is_set():
            try:
                self._queue.put(chunk, timeout=_POLL_SEC)
                return
            except queue.Full:
                continue
        raise RuntimeError(f"stream '{self.description.name}' is closed: the bridge is stopping.")

    def end(self) -> None:
        """No more samples: the pipeline finishes what is queued and stops."""
        self._queue.put(None)

    # ---- the pipeline's side (bridge.pipeline.Source) ---------------------------------------------
    def connect(self) -> StreamDescription | None:
        return self.description

    def reconnect(self) -> StreamDescription | None:
        return None  # a pushed stream cannot come back: its caller ended it

    def pull(self, min_samples: int = 1) -> Chunk | None:
        try:
            chunk = self._queue.get(timeout=_POLL_SEC)
        except queue.Empty:
            return None
        if chunk is None:
            self._closed = True
            return None
        self._last_arrival = time.monotonic()
        return chunk

    def close(self) -> None:
        self._closed = True

    def time_correction(self, timeout: float = 0.0) -> float | None:
        return 0.0  # the caller's times are this machine's Unix times

    @property
    def connected(self) -> bool:
        return not self._closed

    @property
    def seconds_since_last_sample(self) -> float:
        return time.monotonic() - self._last_arrival

    @property
    def clock_offset(self) -> float:
        return 0.0
