"""What a recorded file (XDF, EDF/BDF) hands the importer: streams with Unix-time samples, and markers.

The readers in :mod:`bridge.sources.xdf` and :mod:`bridge.sources.edf` turn their format into
these types, so that the importer runs one code path for both, and builds each stream's engine
from a :class:`~bridge.sources.lsl.StreamDescription` exactly as a live bridge does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bridge.sources.lsl import StreamDescription

#: Samples handed to the engine per push: large enough that Python overhead vanishes, small
#: enough that the engine's buffer stays in cache-sized pieces.
BLOCK_SAMPLES = 8192


class RecordingError(Exception):
    """A file that cannot be imported (or not as asked); the message is one sentence for the user."""


@dataclass(frozen=True)
class Segment:
    """A run of samples without a break: no spectrum window may span two segments."""

    start: int
    stop: int  # exclusive

    @property
    def samples(self) -> int:
        return self.stop - self.start


#: ``read(start, stop) -> (samples (n x channels), Unix seconds (n,))`` for a slice of a stream.
BlockReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class RecordedStream:
    """One numeric stream of a file, ready for :func:`bridge.pipeline.build_engine`."""

    description: StreamDescription
    segments: list[Segment]
    read: BlockReader
    #: Unix seconds of the first and last sample (for listings and messages).
    first_time: float
    last_time: float
    #: True when the reader already applied SPECTRUM_CHANNELS (EDF: channels of different
    #: rates cannot form one sample matrix, so the selection must come first).
    channels_selected: bool = False

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.segments)

    @property
    def duration(self) -> float:
        return self.samples / self.description.srate if self.description.srate > 0 else 0.0

    def frames(self, nperseg: int, hop: int) -> int:
        """Frames the sliding STFT yields: one per hop in every segment at least one window long."""
        return sum((s.samples - nperseg) // hop + 1 for s in self.segments if s.samples >= nperseg)

    def blocks(self) -> Iterator[tuple[bool, np.ndarray, np.ndarray]]:
        """``(starts_segment, samples, times)`` in file order, ``BLOCK_SAMPLES`` at a time."""
        for segment in self.segments:
            for start in range(segment.start, segment.stop, BLOCK_SAMPLES):
                samples, times = self.read(start, min(start + BLOCK_SAMPLES, segment.stop))
                yield start == segment.start, samples, times


@dataclass(frozen=True)
class RecordedMarkers:
    """Markers of one marker stream (XDF) or of a file's annotations (EDF+), Unix ns."""

    stream_name: str
    markers: list[tuple[str, int]]
    #: A dry run counts markers without reading them.
    expected: int | None = None

    @property
    def count(self) -> int:
        return self.expected if self.expected is not None else len(self.markers)


@dataclass
class Recording:
    path: Path
    format: str  # "XDF", "EDF", "BDF"
    streams: list[RecordedStream]
    markers: list[RecordedMarkers]
    #: How sample times were mapped to Unix time, and how accurate that is (one sentence).
    time_base: str
    #: Things the user must hear about (e.g. a truncated file): one sentence each.
    warnings: list[str] = field(default_factory=list)
    #: Streams in the file that were not selected, with the reason (for --dry-run listings).
    skipped: list[str] = field(default_factory=list)
    #: Releases the file (EDF readers keep it open for block reads).
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class StreamSelector:
    """LSL_STREAM_NAME / LSL_STREAM_TYPE / LSL_SOURCE_ID, read as for ``run``; empty = default."""

    name: str | None = None
    type: str | None = None
    source_id: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.name or self.type or self.source_id)

    def matches(self, name: str, type_: str, source_id: str) -> bool:
        return (
            (not self.name or name == self.name)
            and (not self.type or type_ == self.type)
            and (not self.source_id or source_id == self.source_id)
        )

    def describe(self) -> str:
        parts = [f"{key}='{value}'" for key, value in (("name", self.name), ("type", self.type),
                                                        ("source_id", self.source_id)) if value]
        return " and ".join(parts)


def unix_ns(seconds: np.ndarray | float) -> np.ndarray:
    """Unix seconds (float64) to integer ns, rounded as the engines round frame times."""
    return np.rint(np.asarray(seconds, dtype=np.float64) * 1e9).astype(np.int64)


def check_file(path: Path) -> None:
    if not path.exists():
        raise RecordingError(f"{path}: no such file.")
    if not path.is_file():
        raise RecordingError(f"{path}: not a file.")
