"""XDF recordings (LabRecorder's files): streams, markers and LSL times mapped to Unix time.

pyxdf does the reading, the clock synchronisation (``synchronize_clocks=True``: every stream's
timestamps mapped onto the recording host's LSL clock with the file's ClockOffset chunks) and
the dejittering, as every XDF user expects. Before it runs, one quick pass over the chunk
headers (seeks, no sample data) finds the stream headers, sample counts, first clock offsets,
footers and where the intact part of the file ends. That pass makes ``--dry-run`` cheap, lets
pyxdf load only the selected streams, and turns an interrupted recording into "import what is
intact and say where it ends" instead of pyxdf's exception on a chunk cut in half.

Unix time: XDF holds LSL clock values only. The file header's ``<datetime>`` is the wall-clock
time LabRecorder created the file (local time with its UTC offset, whole seconds, truncated);
the earliest ClockOffset chunk gives the recording host's LSL clock shortly after that (its
collection time plus its offset value). So ``unix = datetime + 0.5 s + (t - T0)`` with ``T0``
that LSL time: within +-0.5 s plus LabRecorder's delay from creating the file to its first
clock measurement. When this machine's own LSL clock offset (``time.time() - local_clock()``,
what a live bridge here uses) agrees with that estimate within ``HOST_MATCH_SEC``, the file was
recorded on this machine since its last boot and this machine's offset is used instead, which is
exact to the millisecond and matches the live bridge's frames (docs/import.md).
"""

from __future__ import annotations

import io
import logging
import struct
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pylsl

from bridge.sources.lsl import StreamDescription
from bridge.sources.recorded import (
    RecordedMarkers,
    RecordedStream,
    Recording,
    RecordingError,
    Segment,
    StreamSelector,
    check_file,
    unix_ns,
)

log = logging.getLogger(__name__)

_TAG_FILEHEADER, _TAG_STREAMHEADER, _TAG_SAMPLES, _TAG_CLOCKOFFSET, _TAG_FOOTER = 1, 2, 3, 4, 6
#: The datetime names whole seconds, truncated: its midpoint is the best single estimate.
DATETIME_MIDPOINT_SEC = 0.5
#: This machine's LSL offset replaces the file's estimate when both agree this closely: the
#: estimate's own error (+-0.5 s) plus a generous second for LabRecorder's start-up.
HOST_MATCH_SEC = 1.5


@dataclass
class _Header:
    stream_id: int
    info: ET.Element
    samples: int = 0
    footer: bool = False
    first_offset: tuple[float, float] | None = None  # (collection time, offset value)

    def text(self, tag: str) -> str:
        return (self.info.findtext(tag) or "").strip()

    @property
    def name(self) -> str:
        return self.text("name")

    @property
    def type(self) -> str:
        return self.text("type")

    @property
    def channel_format(self) -> str:
        return self.text("channel_format")

    @property
    def srate(self) -> float:
        try:
            return float(self.text("nominal_srate") or 0)
        except ValueError:
            return 0.0

    def who(self) -> str:
        return (f"'{self.name}' (type {self.type or '-'}, {self.channel_format}, "
                f"source_id {self.text('source_id') or '-'})")


@dataclass
class _Scan:
    size: int
    intact_end: int
    datetime_text: str | None
    headers: dict[int, _Header] = field(default_factory=dict)


def _varlen(data: bytes, at: int) -> tuple[int, int] | None:
    """XDF variable-length integer at ``data[at]``: (value, bytes used), None if cut off."""
    if at >= len(data):
        return None
    width = data[at]
    if width not in (1, 4, 8) or at + 1 + width > len(data):
        return None
    return int.from_bytes(data[at + 1 : at + 1 + width], "little"), 1 + width


def _scan(path: Path) -> _Scan:
    """Walk the chunk headers; stop at the first chunk that is cut off or malformed."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != b"XDF:":
            raise RecordingError(f"{path}: not an XDF file (it does not start with 'XDF:').")
        scan = _Scan(size=size, intact_end=4, datetime_text=None)
        pos = 4
        while pos < size:
            f.seek(pos)
            head = f.read(9)
            length = _varlen(head, 0)
            if length is None or length[0] < 2 or pos + length[1] + length[0] > size:
                break
            content_at = pos + length[1]
            end = content_at + length[0]
            f.seek(content_at)
            tag = int.from_bytes(f.read(2), "little")
            if tag == _TAG_FILEHEADER:
                try:
                    scan.datetime_text = (ET.fromstring(f.read(length[0] - 2)).findtext("datetime") or "").strip() or None
                except ET.ParseError:
                    break
            elif tag in (_TAG_STREAMHEADER, _TAG_FOOTER, _TAG_SAMPLES, _TAG_CLOCKOFFSET):
                stream_id = struct.unpack("<I", f.read(4))[0]
                if tag == _TAG_STREAMHEADER:
                    try:
                        info = ET.fromstring(f.read(length[0] - 6).decode("utf-8", "replace"))
                    except ET.ParseError:
                        break
                    scan.headers[stream_id] = _Header(stream_id, info)
                elif stream_id in scan.headers:
                    header = scan.headers[stream_id]
                    if tag == _TAG_FOOTER:
                        header.footer = True
                    elif tag == _TAG_SAMPLES:
                        count = _varlen(f.read(9), 0)
                        if count is None:
                            break
                        header.samples += count[0]
                    elif header.first_offset is None:
                        header.first_offset = struct.unpack("<dd", f.read(16))
            pos = end
        scan.intact_end = pos
    return scan


class _Prefix(io.RawIOBase):
    """The first ``end`` bytes of a file: what pyxdf may read of a file whose tail is cut off."""

    def __init__(self, path: Path, end: int) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._end = end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        remaining = self._end - self._file.tell()
        if remaining <= 0:
            return 0
        view = memoryview(buffer)
        return self._file.readinto(view[: min(len(view), remaining)]) or 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            return self._file.seek(self._end + offset)
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def _labels(header: _Header, count: int) -> tuple[str, ...]:
    labels = [(c.findtext("label") or "").strip() for c in header.info.findall("./desc/channels/channel")]
    return tuple(labels) if len(labels) == count else ("",) * count


def _frequencies(header: _Header) -> np.ndarray | None:
    text = (header.info.findtext("./desc/frequencies") or "").strip()
    if not text:
        return None
    try:
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        return None


def describe(header: _Header) -> StreamDescription:
    count = int(header.text("channel_count") or 0)
    return StreamDescription(
        name=header.name,
        type=header.type,
        source_id=header.text("source_id"),
        hostname=header.text("hostname"),
        uid=header.text("uid"),
        channel_count=count,
        srate=header.srate,
        channel_format=header.channel_format,
        labels=_labels(header, count),
        frequencies=_frequencies(header),
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class TimeBase:
    offset: float  # added to (synchronised) LSL seconds to give Unix seconds
    text: str


def time_base(path: Path, datetime_text: str | None, first_lsl: float) -> TimeBase:
    """Unix = LSL + offset; see the module docstring for the two ways and their accuracy."""
    if datetime_text is None:
        raise RecordingError(
            f"{path}: the file header has no <datetime> (recording date), so its LSL times cannot be placed "
            "in Unix time; it was written by a LabRecorder older than 1.13 or another tool."
        )
    try:
        started = datetime.strptime(datetime_text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        raise RecordingError(f"{path}: the recording date '{datetime_text}' in the file header is not ISO 8601.") from None
    estimate = started + DATETIME_MIDPOINT_SEC - first_lsl
    here = time.time() - pylsl.local_clock()
    if abs(here - estimate) <= HOST_MATCH_SEC:
        return TimeBase(here, (
            f"this machine's LSL clock (recorded here since the last boot: the file's date {datetime_text} agrees "
            f"within {abs(here - estimate):.2f} s), as a live bridge here maps it: exact to milliseconds"
        ))
    return TimeBase(estimate, (
        f"the file's recording date {datetime_text} (whole seconds) and its first clock measurement: "
        "within +-0.5 s plus LabRecorder's start-up delay"
    ))


def _select(path: Path, scan: _Scan, selector: StreamSelector, mode: str) -> tuple[list[_Header], list[str]]:
    headers = list(scan.headers.values())
    if not headers:
        raise RecordingError(f"{path}: the file has no stream (no intact stream header).")
    listing = "; ".join(h.who() for h in headers)
    if selector.empty:
        chosen = [h for h in headers if h.type.lower() == "eeg" and h.channel_format != "string"]
        if not chosen:
            what = "only marker (string) streams" if all(h.channel_format == "string" for h in headers) else "no EEG-typed numeric stream"
            raise RecordingError(
                f"{path}: {what}, nothing to compute spectra from (it has: {listing}); choose a numeric stream "
                "with LSL_STREAM_NAME / LSL_STREAM_TYPE / LSL_SOURCE_ID."
            )
    else:
        chosen = [h for h in headers if selector.matches(h.name, h.type, h.text("source_id"))]
        if not chosen:
            raise RecordingError(f"{path}: no stream matches {selector.describe()} (it has: {listing}).")
        strings = [h for h in chosen if h.channel_format == "string"]
        if strings:
            raise RecordingError(
                f"{path}: stream {strings[0].who()} carries strings (markers), not signal; choose a numeric EEG stream."
            )
    if mode == "raw":
        irregular = [h for h in chosen if h.srate <= 0]
        if irregular:
            raise RecordingError(
                f"{path}: stream {irregular[0].who()} has no nominal sampling rate (irregular), so no spectrum can be "
                "computed from it; use SPECTRUM_MODE=precomputed if it carries spectra."
            )
    skipped = [f"{h.who()}: not selected" for h in headers if h not in chosen and h.channel_format != "string"]
    return chosen, skipped


def _marker_headers(scan: _Scan, selector: StreamSelector) -> list[_Header]:
    strings = [h for h in scan.headers.values() if h.channel_format == "string"]
    if selector.empty:
        return strings
    return [h for h in strings if selector.matches(h.name, h.type, h.text("source_id"))]


def open_xdf(path: Path, selector: StreamSelector, markers: StreamSelector, mode: str = "raw",
             *, load: bool = True) -> Recording:
    """Read ``path``; ``load=False`` only scans (``--dry-run``): no samples, estimated segments."""
    check_file(path)
    scan = _scan(path)
    chosen, skipped = _select(path, scan, selector, mode)
    marker_headers = _marker_headers(scan, markers)
    offsets = [h.first_offset[0] + h.first_offset[1] for h in scan.headers.values() if h.first_offset]
    warnings: list[str] = []
    if not load:
        # Without samples, the LSL time of the start is unknown: show durations, not dates.
        streams = [
            RecordedStream(describe(h), [Segment(0, h.samples)], _no_samples, 0.0,
                           h.samples / h.srate if h.srate > 0 else 0.0)
            for h in chosen
        ]
        if scan.intact_end < scan.size:
            warnings.append(f"{path}: cut off at byte {scan.intact_end} of {scan.size} (the recording was interrupted); "
                            "only the intact part would be imported.")
        counted = [RecordedMarkers(h.name, [], expected=h.samples) for h in marker_headers]
        base = time_base(path, scan.datetime_text, min(offsets)).text if offsets else "from the first samples (not read in a dry run)"
        return Recording(path, "XDF", streams, counted, base, warnings, skipped)
    raw = _load(path, scan, [h.stream_id for h in chosen + marker_headers])
    first_lsl = min(offsets) if offsets else min(
        (float(raw[h.stream_id]["time_stamps"][0]) for h in chosen if len(raw[h.stream_id]["time_stamps"])), default=0.0
    )
    base = time_base(path, scan.datetime_text, first_lsl)
    streams: list[RecordedStream] = []
    for header in chosen:
        data = raw[header.stream_id]
        stamps = np.asarray(data["time_stamps"], dtype=np.float64)
        if stamps.size == 0:
            skipped.append(f"{header.who()}: no samples")
            continue
        values = data["time_series"]
        segments = [Segment(int(a), int(b) + 1) for a, b in data["info"]["segments"]] or [Segment(0, stamps.size)]
        streams.append(RecordedStream(
            description=describe(header),
            segments=segments,
            read=_slicer(values, stamps, base.offset),
            first_time=float(stamps[0] + base.offset),
            last_time=float(stamps[-1] + base.offset),
        ))
    if not streams:
        raise RecordingError(f"{path}: the selected streams hold no samples ({', '.join(h.who() for h in chosen)}).")
    unfinished = [h for h in chosen if not h.footer]
    if scan.intact_end < scan.size or unfinished:
        ends = ", ".join(f"'{s.description.name}' up to {_iso(s.last_time)} ({s.duration:.1f} s)" for s in streams)
        where = (f"cut off at byte {scan.intact_end} of {scan.size}" if scan.intact_end < scan.size
                 else "missing its stream footers")
        warnings.append(f"{path}: {where} (the recording was interrupted); importing the intact part: {ends}.")
    marker_sets = []
    for header in marker_headers:
        data = raw[header.stream_id]
        times = unix_ns(np.asarray(data["time_stamps"], dtype=np.float64) + base.offset)
        texts = ["|".join(str(v) for v in sample) for sample in data["time_series"]]
        marker_sets.append(RecordedMarkers(header.name, list(zip(texts, (int(t) for t in times)))))
    return Recording(path, "XDF", streams, marker_sets, base.text, warnings, skipped)


def _no_samples(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    raise RuntimeError("a dry-run recording has no samples")


def _slicer(values: np.ndarray, stamps: np.ndarray, offset: float):  # noqa: ANN202 - a BlockReader
    def read(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return values[start:stop], stamps[start:stop] + offset

    return read


def _load(path: Path, scan: _Scan, stream_ids: list[int]) -> dict[int, dict]:
    import pyxdf  # noqa: PLC0415 - only the import command needs it

    logging.getLogger("pyxdf").setLevel(max(logging.WARNING, log.getEffectiveLevel()))  # its INFO is per-step chatter

    reader = io.BufferedReader(_Prefix(path, scan.intact_end), buffer_size=1 << 20)
    try:
        streams, _ = pyxdf.load_xdf(reader, select_streams=stream_ids, synchronize_clocks=True,
                                    dejitter_timestamps=True)
    except Exception as exc:  # noqa: BLE001 - pyxdf raises bare Exceptions on damaged files
        raise RecordingError(f"{path}: pyxdf could not read the file ({type(exc).__name__}: {exc}).") from None
    return {int(s["info"]["stream_id"]): s for s in streams}
