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


def safe_name(raw: str, fallback: str) -> str:
    """``raw`` in the characters Grafana Live, file names and Prometheus labels all accept."""
    return _UNSAFE.sub("_", raw.strip()).strip("_")[:_MAX_NAME] or fallback


def stream_key(name: str, source_id: str, hostname: str) -> str:
    """The documented key of an LSL stream: its source_id, else ``<name>-<hostname>``, made safe.

    Stable across restarts and discovery order, and different for two same-named streams of two
    hosts (LabRecorder's users meet exactly those), so the archive, Live and the metrics never
    merge them.
    """
    return safe_name(source_id or f"{name}-{hostname}", "stream")


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


@dataclass(frozen=True)
class Band:
    """A frequency band for band power: ``low_hz`` inclusive, ``high_hz`` exclusive."""

    name: str
    low_hz: float
    high_hz: float


#: Numbers behind a channel's quality state, in the row order of :attr:`ChannelQuality.values`.
#: These names are the InfluxDB ``eeg_quality`` field names (docs/data-model.md).
QUALITY_FIELDS = ("std", "dc_offset", "rail_fraction", "line_noise_db", "hf_ratio_db")
#: ``ChannelQuality.state`` codes, in order: 0 good, 1 warn, 2 bad.
QUALITY_STATES = ("good", "warn", "bad")
#: Bits of ``ChannelQuality.flags``: which checks a channel failed (warn or bad).
QUALITY_FLAGS = {"flat": 1, "railed": 2, "line_noise": 4, "hf_noise": 8}


@dataclass(frozen=True, eq=False)
class ChannelQuality:
    """Per-channel signal quality for one frame, computed on the frame's own window.

    ``values`` is float32 ``(len(QUALITY_FIELDS), n_channels)``; a number that cannot be known
    (time-domain checks on a precomputed stream) is NaN. ``state`` is int8 per channel
    (index into QUALITY_STATES), ``flags`` a uint8 bit set of QUALITY_FLAGS per channel.
    """

    state: np.ndarray = field(repr=False)
    flags: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        for array in (self.state, self.flags, self.values):
            if array.flags.writeable:
                _readonly(array)


@dataclass(frozen=True, eq=False)
class FrameLayout:
    """What stays fixed while a stream keeps its shape; compared by identity."""

    stream: str
    channels: tuple[str, ...]
    frequencies: np.ndarray = field(repr=False)
    #: Nominal sampling rate of the source (0 for a precomputed, irregular stream).
    srate: float = 0.0
    #: Bands whose power frames carry (``SpectrumFrame.band_db``/``band_rel`` rows, in order).
    bands: tuple[Band, ...] = ()
    #: The stream's key when the bridge keeps several streams apart (the archive's ``stream_id``
    #: tag); empty for one classic stream and for tools, whose rows go by ``stream`` alone.
    key: str = ""

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
            and self.key == other.key
            and self.channels == other.channels
            and np.array_equal(self.frequencies, other.frequencies)
        )


@dataclass(frozen=True)
class Session:
    """Who was measured doing what (BIDS entities), attached to every frame while it runs."""

    participant: str | None = None
    session: str | None = None
    task: str | None = None
    run: str | None = None
    acquisition: str | None = None
    modality: str | None = None
    #: Unix time (ns) the session started.
    started_ns: int = 0


@dataclass(frozen=True, eq=False)
class SpectrumFrame:
    """One spectrum per channel for one instant.

    ``time_ns`` is Unix time (UTC, ns) of the *centre* of the analysis window, the same
    convention as the ``t`` axis of ``scipy.signal.spectrogram``; for precomputed spectra it is
    the sample's own timestamp. ``newest_sample_ns`` is the Unix time of the newest sample that
    went into the frame, so a sink can report true end-to-end latency at the moment it pushes.

    Derived products, computed once by the engine and shared by every sink (``None`` when off,
    or on frames skipped by decimation): ``band_db`` is float32 ``(n_bands, n_channels)``
    absolute band power in dB, ``band_rel`` the same shape as a fraction of the power in the
    union of the bands, ``quality`` the per-channel signal quality.
    """

    layout: FrameLayout
    seq: int
    time_ns: int
    newest_sample_ns: int
    power_db: np.ndarray = field(repr=False)
    band_db: np.ndarray | None = field(default=None, repr=False)
    band_rel: np.ndarray | None = field(default=None, repr=False)
    quality: ChannelQuality | None = field(default=None, repr=False)
    #: The session running when the frame was published (None between sessions).
    session: Session | None = None

    def __post_init__(self) -> None:
        if self.power_db.shape != self.layout.shape:
            raise ValueError(
                f"frame values have shape {self.power_db.shape}, layout says {self.layout.shape}"
            )
        if self.power_db.dtype != np.float32:
            object.__setattr__(self, "power_db", self.power_db.astype(np.float32))
        if self.power_db.flags.writeable:
            _readonly(self.power_db)
