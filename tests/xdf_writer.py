"""A small XDF 1.0 writer for tests: files with known content, written independently of pyxdf.

Follows the XDF specification (github.com/sccn/xdf wiki, "Specifications") and LabRecorder's
``xdfwriter.cpp``: the magic ``XDF:``, then chunks ``[NumLengthBytes][Length][Tag][Content]``
where Length counts the 2-byte tag and the content; tags 1 FileHeader (XML with ``<datetime>``
as ``%FT%T%z``), 2 StreamHeader, 3 Samples, 4 ClockOffset, 6 StreamFooter, each of 2-6 with a
4-byte StreamId first. Samples: ``[NumSampleBytes][NumSamples]`` then per sample
``[TimeStampBytes 0|8][TimeStamp double]`` and the values (strings as
``[NumLengthBytes][Length][bytes]``). ClockOffset: ``[CollectionTime][OffsetValue]`` doubles,
where CollectionTime is on the stream's own clock and OffsetValue maps it to the recorder's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

_DTYPES = {"float32": "<f4", "double64": "<f8", "int16": "<i2", "int32": "<i4"}


def varlen(value: int) -> bytes:
    if value < 256:
        return bytes([1, value])
    if value < 1 << 32:
        return bytes([4]) + struct.pack("<I", value)
    return bytes([8]) + struct.pack("<Q", value)


def chunk(tag: int, content: bytes, stream_id: int | None = None) -> bytes:
    body = struct.pack("<H", tag) + (struct.pack("<I", stream_id) if stream_id is not None else b"") + content
    return varlen(len(body)) + body


@dataclass
class XdfStream:
    stream_id: int
    name: str
    type: str
    channel_format: str  # float32, double64, int16, int32, string
    srate: float
    #: numeric: (n, channels) array; string: list of per-sample lists of strings
    values: object
    #: timestamps on the stream's own clock, one per sample
    stamps: np.ndarray
    labels: list[str] | None = None
    source_id: str = ""
    #: (collection time on the stream's clock, offset to add to reach the recorder's clock)
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)
    chunk_samples: int = 100

    @property
    def channels(self) -> int:
        if self.channel_format == "string":
            return len(self.values[0]) if self.values else 1  # type: ignore[index]
        return int(np.asarray(self.values).shape[1])

    def header_xml(self) -> bytes:
        labels = ""
        if self.labels:
            labels = "<channels>" + "".join(
                f"<channel><label>{escape(label)}</label><unit>microvolts</unit></channel>" for label in self.labels
            ) + "</channels>"
        return (
            f'<?xml version="1.0"?><info><name>{escape(self.name)}</name><type>{escape(self.type)}</type>'
            f"<channel_count>{self.channels}</channel_count><nominal_srate>{self.srate!r}</nominal_srate>"
            f"<channel_format>{self.channel_format}</channel_format><source_id>{escape(self.source_id)}</source_id>"
            f"<version>1.1</version><created_at>{float(self.stamps[0]) - 1.0!r}</created_at>"
            f"<uid>uid-{self.stream_id}</uid><session_id>default</session_id><hostname>testhost</hostname>"
            f"<desc>{labels}</desc></info>"
        ).encode()

    def sample_chunks(self) -> list[tuple[int, bytes]]:
        """(samples, content after the StreamId) per Samples chunk."""
        out = []
        n = len(self.stamps)
        for start in range(0, n, self.chunk_samples):
            stop = min(n, start + self.chunk_samples)
            parts = [varlen(stop - start)]
            for k in range(start, stop):
                parts.append(b"\x08" + struct.pack("<d", float(self.stamps[k])))
                if self.channel_format == "string":
                    for text in self.values[k]:  # type: ignore[index]
                        raw = text.encode()
                        parts.append(varlen(len(raw)) + raw)
                else:
                    parts.append(np.asarray(self.values[k], dtype=_DTYPES[self.channel_format]).tobytes())
            # [NumSampleBytes][NumSamples] is one variable-length integer
            out.append((stop - start, b"".join(parts)))
        return out

    def footer_xml(self) -> bytes:
        offsets = "".join(f"<offset><time>{t!r}</time><value>{v!r}</value></offset>" for t, v in self.clock_offsets)
        return (
            f'<?xml version="1.0"?><info><first_timestamp>{float(self.stamps[0])!r}</first_timestamp>'
            f"<last_timestamp>{float(self.stamps[-1])!r}</last_timestamp><sample_count>{len(self.stamps)}</sample_count>"
            f"<clock_offsets>{offsets}</clock_offsets></info>"
        ).encode()


@dataclass(frozen=True)
class Written:
    """Where each chunk ends in the file, to cut a copy at a known place (an interrupted recording)."""

    tag: int
    stream_id: int | None
    samples: int
    end: int


def write_xdf(path: Path, datetime_text: str | None, streams: list[XdfStream], *, footers: bool = True) -> list[Written]:
    """Write ``streams`` interleaved chunk by chunk (as LabRecorder does), clock offsets first."""
    info = "<version>1.0</version>" + (f"<datetime>{datetime_text}</datetime>" if datetime_text else "")
    data = bytearray(b"XDF:")
    written: list[Written] = []

    def add(tag: int, body: bytes, stream_id: int | None = None, samples: int = 0) -> None:
        data.extend(chunk(tag, body, stream_id))
        written.append(Written(tag, stream_id, samples, len(data)))

    add(1, f'<?xml version="1.0"?><info>{info}</info>'.encode())
    for s in streams:
        add(2, s.header_xml(), s.stream_id)
    for s in streams:
        for collection, value in s.clock_offsets:
            add(4, struct.pack("<dd", collection, value), s.stream_id)
    queues = [s.sample_chunks() for s in streams]
    while any(queues):
        for q, s in zip(queues, streams):
            if q:
                samples, body = q.pop(0)
                add(3, body, s.stream_id, samples)
    if footers:
        for s in streams:
            add(6, s.footer_xml(), s.stream_id)
    path.write_bytes(bytes(data))
    return written
