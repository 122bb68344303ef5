"""The LSL inlet shared by the floor and the straightforward pipeline, opened like the bridge opens it.

Same resolve predicate, processing flags, buffer length and numpy destination buffer as
``bridge.sources.lsl``, so the differences the cost table shows come from what happens *after*
the pull, not from a different way of reading LSL.
"""

from __future__ import annotations

import time

import numpy as np
import pylsl

pylsl.set_config_content("[log]\nlevel = -2\n")

FLAGS = pylsl.proc_clocksync | pylsl.proc_dejitter | pylsl.proc_monotonize


class Inlet:
    def __init__(self, name: str, *, buffer_sec: int = 30, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        found: list[pylsl.StreamInfo] = []
        while not found:
            if time.monotonic() > deadline:
                raise SystemExit(f"no LSL stream named {name!r}")
            found = pylsl.resolve_bypred(f"name='{name}'", 1, 0.5)
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=buffer_sec, recover=True, processing_flags=FLAGS, as_numpy=True)
        info = self.inlet.info(timeout=5.0)
        self.inlet.open_stream(timeout=5.0)
        self.channels = info.channel_count()
        self.rate = info.nominal_srate()
        self.labels = _labels(info)
        rows = max(64, int(self.rate))
        self.buffer = np.empty((rows, self.channels), dtype=self.inlet.np_dtype)
        #: LSL local_clock -> Unix seconds, estimated once, as the bridge does.
        self.clock_offset = time.time() - pylsl.local_clock()

    def pull(self, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """(samples view, Unix times); empty after the 0.2 s timeout."""
        data, stamps = self.inlet.pull_chunk(
            timeout=0.2, max_samples=self.buffer.shape[0], dest_obj=self.buffer,
            min_samples=max(1, min(min_samples, self.buffer.shape[0])),
        )
        return data, stamps + self.clock_offset

    def close(self) -> None:
        self.inlet.close_stream()


def _labels(info: pylsl.StreamInfo) -> list[str]:
    labels: list[str] = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty():
        labels.append(channel.child_value("label"))
        channel = channel.next_sibling("channel")
    return labels if len(labels) == info.channel_count() else [f"ch{i}" for i in range(info.channel_count())]
