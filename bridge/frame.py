"""The spectrum frame: the one type every stage after the source shares.

A frame is immutable so that the fan-out can hand the same object to several sink threads
without copies or locks. Everything that is constant while a stream keeps its shape (stream
name, channel names, frequency axis) lives in a :class:`FrameLayout` that consecutive frames
share by identity, so encoders can cache per-layout work (field names, line templates) and
recognise a layout change with a single ``is`` test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

#: Grafana Live channel segments may only use these characters (see grafana-live.md).
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_NAME = 64


def channel_names(labels: Sequence[str | None]) -> tuple[str, ...]:
    """Turn raw LSL channel labels into names that are safe and distinct everywhere.

    The same name is the Grafana Live measurement (``stream/<id>/<name>``) and the InfluxDB
    ``channel`` tag, so the live and the history dashboards address a channel identically.
    Distinctness matters for the archive too: two channels sharing a tag would overwrite each
    other's points. Missing labels become ``ch<i>``; duplicates get a ``_<i>`` suffix.
    """
    names: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(labels):
        name = _UNSAFE.sub("_", (raw or "").strip()).strip("_")[:_MAX_NAME] or f"ch{i}"
        if name in seen:
            name = f"{name[: _MAX_NAME - 6]}_{i}"
        seen.add(name)
        names.append(name)
    return tuple(names)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class FrameLayout:
    """What stays fixed while a stream keeps its shape; compared by identity."""

    stream: str
    channels: tuple[str, ...]
    frequencies: np.ndarray = field(repr=False)
    #: Nominal sampling rate of the source (0 for a precomputed, irregular stream).
    srate: float = 0.0

    def __post_init__(self) -> None:
        freqs = np.array(self.frequencies, dtype=np.float64)
        if freqs.ndim != 1 or freqs.size == 0:
            raise ValueError("a frame layout needs a non-empty 1-D frequency axis")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channel names in a frame layout must be distinct")
        object.__setattr__(self, "frequencies", _readonly(freqs))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.channels), int(self.frequencies.size)

    def same_axes(self, other: FrameLayout) -> bool:
        """True when frames of ``other`` can continue this layout's series unchanged."""
        return (
            self.stream == other.stream
            and self.channels == other.channels
            and np.array_equal(self.frequencies, other.frequencies)
        )


@dataclass(frozen=True, eq=False)
class SpectrumFrame:
    """One spectrum per channel for one instant.

    ``time_ns`` is Unix time (UTC, ns) of the *centre* of the analysis window, the same
    convention as the ``t`` axis of ``scipy.signal.spectrogram``; for precomputed spectra it is
    the sample's own timestamp. ``newest_sample_ns`` is the Unix time of the newest sample that
    went into the frame, so a sink can report true end-to-end latency at the moment it pushes.
    """

    layout: FrameLayout
    seq: int
    time_ns: int
    newest_sample_ns: int
    power_db: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.power_db.shape != self.layout.shape:
            raise ValueError(
                f"frame values have shape {self.power_db.shape}, layout says {self.layout.shape}"
            )
        if self.power_db.dtype != np.float32:
            object.__setattr__(self, "power_db", self.power_db.astype(np.float32))
        if self.power_db.flags.writeable:
            _readonly(self.power_db)
