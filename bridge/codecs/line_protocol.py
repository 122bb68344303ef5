"""Vectorised InfluxDB line-protocol encoder for spectrum frames.

Both sinks encode every frame, so this is on the hot path: a 64 x 129 frame is 8,256 values,
and a per-value Python loop (which is what influxdb-client's ``Point`` is) costs ~12 ms of a
2-core machine per frame. Here a batch of frames is rendered into a uint8 character matrix with
one row per line, in fixed-width columns. Variable widths (sign, leading zeros, padding of
shorter prefixes and timestamps) are filled with NUL bytes, and one ``bytes.translate`` deleting
NUL compacts the matrix into the body: the same idea as ``matrix[mask]`` but it needs no mask
and runs at C-loop speed. NUL never occurs in real text because escaping replaces control
characters.

Everything that depends only on the layout (measurement, tags, field keys, separators) is written
into a template once; per frame only the value and timestamp columns are rewritten, each as
8-byte words built by table look-up. Values are fixed-point with ``decimals`` digits
(data-model.md): a float32 times a power of ten up to 1e6 is exact in float64, so ``rint`` gives
exactly the digits Python's ``f"{x:.3f}"`` would (except that ``-0.000`` is written ``0.000``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from bridge.frame import FrameLayout, SpectrumFrame

__all__ = [
    "EncodeResult",
    "LineProtocolEncoder",
    "bin_field_names",
    "escape_key",
    "escape_measurement",
]

#: Values at or above this magnitude are not written: their fixed-point form would not fit the
#: integer range we format from, and a dB value that large is garbage anyway.
MAX_ABS_VALUE = 1e12

_MIN_INT_DIGITS = 3  # a template for dB values up to +-999.999 covers every realistic frame
#: encode_many renders consecutive frames together up to this many matrix bytes. Batching pays
#: for small frames (per-call overhead: ~4x at 8 x 33), but a matrix that outgrows the CPU cache
#: is slower per byte than rendering frame by frame (measured at 64 x 129).
_CHUNK_BYTES = 256 << 10
_MAX_TEMPLATES = 4
_INT64 = 1 << 63
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _fast_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Look-up tables for digits and for whole 8-byte value words.

    For 3 decimals and |x| < 1000 a value is exactly one 8-byte word ``[sign][3 int][.][3 frac]``:
    ``SIGN_INT[int + 1000 * negative] | FRAC[frac]`` builds it with two gathers, with NUL in
    place of the sign and leading zeros. Built as bytes and viewed, so byte order is native.
    """
    digits = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8)
    sign_int = np.zeros((2000, 8), dtype=np.uint8)
    for i in range(2000):
        negative, whole = divmod(i, 1000)
        text = (b"-" if negative else b"\0") + str(whole).encode().rjust(3, b"\0") + b"."
        sign_int[i, :5] = list(text)
    frac = np.zeros((1000, 8), dtype=np.uint8)
    frac[:, 5:] = digits
    return digits, sign_int.view(np.uint64).ravel(), frac.view(np.uint64).ravel()


_DIGITS, _SIGN_INT, _FRAC = _fast_tables()


def _escape(s: str, special: str) -> str:
    """Backslash-escape ``special``; replace control characters (a newline would end the line).

    A backslash is literal in line protocol unless it precedes an escapable character (or
    another backslash, which parsers may collapse), so it is doubled only there or at the end of
    the token; a name like ``C:\\eeg`` is therefore stored unchanged by every server.
    """
    s = _CONTROL.sub(" ", s)
    out: list[str] = []
    for i, ch in enumerate(s):
        if ch == "\\":
            nxt = s[i + 1 : i + 2]
            out.append("\\\\" if nxt in ("", "\\") or nxt in special else "\\")
        elif ch in special:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def escape_measurement(s: str) -> str:
    """Escape a measurement name; reject names no server could store as given.

    An empty name is a syntax error, and a line starting with ``#`` is a comment, i.e. silently
    dropped, so both raise ``ValueError`` instead of losing data.
    """
    if not s:
        raise ValueError("a measurement name must not be empty")
    if s.startswith("#"):
        raise ValueError(f"measurement {s!r} starts with '#': the line would be read as a comment")
    return _escape(s, ", ")


def escape_key(s: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _escape(s, ",= ")


def bin_field_names(frequencies: np.ndarray) -> tuple[str, ...]:
    """Name frequency bins so that lexicographic order equals numeric order.

    Grafana sorts fields by name (and older heatmaps order rows that way), so names are
    zero-padded to one common width; decimals grow from 2 only as far as needed to keep close
    bins apart. The integer width is taken from the rounded names, so 999.999 Hz at 2 decimals
    (``1000.00``) widens every name rather than breaking the order.
    """
    freqs = np.asarray(frequencies, dtype=np.float64).ravel()
    if not np.all(np.isfinite(freqs)) or np.any(freqs < 0):
        raise ValueError("bin frequencies must be finite and non-negative")
    values = freqs.tolist()
    for decimals in range(2, 7):
        plain = [f"{f:.{decimals}f}" for f in values]
        width = max([_MIN_INT_DIGITS] + [len(p) - decimals - 1 for p in plain])
        names = tuple(p.zfill(width + 1 + decimals) for p in plain)
        if len(set(names)) == len(names):
            return names
    raise ValueError("bin frequencies cannot be given distinct names with up to 6 decimals")


@dataclass(frozen=True)
class EncodeResult:
    body: bytes  # complete line-protocol body, every line ends with '\n'
    lines: int
    values_skipped: int  # values not written: non-finite, |x| >= MAX_ABS_VALUE, or in a dropped wide line


def _digits(x: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative ints ``x < 10**width``, zero-padded: shape ``(n, width)``."""
    chunks: list[np.ndarray] = []
    for _ in range(-(-width // 3) - 1):
        x, low = np.divmod(x, 1000)
        chunks.append(np.take(_DIGITS, low, axis=0))
    chunks.append(np.take(_DIGITS, x, axis=0))
    chars = np.concatenate(chunks[::-1], axis=-1)
    return chars[:, chars.shape[1] - width :]


def _value_words(fixed: np.ndarray, decimals: int) -> np.ndarray:
    """Fixed-point ints (n,) -> right-aligned, NUL-padded text as (n, words) uint64."""
    negative = fixed < 0
    magnitude = np.abs(fixed)
    int_part = magnitude // 10**decimals
    frac_part = magnitude - int_part * 10**decimals
    largest = int(int_part.max())
    if decimals == 3 and largest < 1000:
        words = _SIGN_INT[int_part + 1000 * negative]
        words |= _FRAC[frac_part]
        return words[:, None]
    int_digits = max(_MIN_INT_DIGITS, len(str(largest)))
    width = -(-(2 + int_digits + decimals) // 8) * 8
    chars = np.zeros((fixed.size, width), dtype=np.uint8)
    point = width - decimals - 1
    chars[:, point + 1 :] = _digits(frac_part, decimals)
    chars[:, point] = ord(".")
    leading = int_part[:, None] < [10**k for k in range(int_digits - 1, 0, -1)]
    int_chars = _digits(int_part, int_digits)
    int_chars[:, :-1][leading] = 0
    chars[:, point - int_digits : point] = int_chars
    chars[:, point - int_digits - 1] = negative * ord("-")
    return chars.view(np.uint64)


def _tail_words(stamps: list[int]) -> np.ndarray:
    """`` <ts>\\n`` per frame, NUL-padded on the left to whole words: (frames, words) uint64."""
    texts = [f" {t}\n".encode() for t in stamps]
    width = -(-max(21, *map(len, texts)) // 8) * 8  # 21: a 19-digit ns timestamp
    joined = b"".join(t.rjust(width, b"\0") for t in texts)
    return np.frombuffer(joined, dtype=np.uint64).reshape(len(texts), width // 8)


def _char_block(texts: Sequence[str]) -> np.ndarray:
    """Texts as rows of one uint8 matrix, NUL-padded on the left."""
    raw = [t.encode() for t in texts]
    width = max(map(len, raw), default=0)
    joined = b"".join(r.rjust(width, b"\0") for r in raw)
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(raw), width)


@dataclass(frozen=True, eq=False)
class _LayoutParts:
    """The text of a layout's lines that never changes: line prefixes and cell heads."""

    layout: FrameLayout
    prefix: np.ndarray  # (lines per frame, P): measurement and tag set
    head: np.ndarray  # (cells per line, H): separator, field key and '='

    @property
    def lines_per_frame(self) -> int:
        return self.prefix.shape[0]

    @property
    def cells(self) -> int:
        return self.head.shape[0]

    def row_bytes(self, value_width: int = 8, tail_width: int = 24) -> int:
        return self.prefix.shape[1] + self.cells * (self.head.shape[1] + value_width) + tail_width


class _Template:
    """Character matrix for up to ``frames`` frames of one layout and column widths.

    Row layout: ``prefix | cells x (head, value) | tail``. Prefixes and heads are written here
    once; ``values`` and ``tails`` are unaligned uint64 views onto the variable columns, so a
    frame is rendered with two strided word copies.
    """

    def __init__(self, parts: _LayoutParts, frames: int, value_width: int, tail_width: int) -> None:
        lpf, cells = parts.lines_per_frame, parts.cells
        p, h = parts.prefix.shape[1], parts.head.shape[1]
        row = parts.row_bytes(value_width, tail_width)
        rows = frames * lpf
        self.frames = frames
        self.buf = np.zeros((rows, row), dtype=np.uint8)
        self.buf[:, :p] = np.tile(parts.prefix, (frames, 1))
        cell_width = h + value_width
        self.buf[:, p : p + cells * cell_width].reshape(rows, cells, cell_width)[:, :, :h] = parts.head
        self.values = np.ndarray(
            (rows, cells, value_width // 8), np.uint64, self.buf, p + h, (row, cell_width, 8)
        )
        self.tails = np.ndarray(
            (frames, lpf, tail_width // 8), np.uint64, self.buf, row - tail_width, (lpf * row, row, 8)
        )


class LineProtocolEncoder:
    """Encodes frames to line protocol; one instance per thread (it reuses internal buffers).

    ``measurement=None`` names each line after its channel (Grafana Live: one channel per EEG
    channel). The long schema writes one line per channel and bin with a ``frequency_bin`` tag.
    Both schemas are rendered alike: a wide line holds one cell per bin, a long line one cell.
    """

    def __init__(
        self,
        *,
        schema: Literal["wide", "long"] = "wide",
        measurement: str | None = "eeg_spectrum",
        tag_channel: bool = True,
        tag_stream: bool = True,
        decimals: int = 3,
    ) -> None:
        if schema not in ("wide", "long"):
            raise ValueError(f"unknown schema {schema!r}")
        if schema == "long" and measurement is None:
            raise ValueError("the long schema needs a measurement name")
        if not 1 <= decimals <= 6:
            # at most 6 keeps |x| * 10**decimals exact in float64 and inside int64
            raise ValueError("decimals must be between 1 and 6")
        self.schema = schema
        self.decimals = decimals
        self.tag_channel = tag_channel
        self.tag_stream = tag_stream
        self._measurement = None if measurement is None else escape_measurement(measurement)
        self._scale = float(10**decimals)
        self._limit = MAX_ABS_VALUE * self._scale
        self._parts: _LayoutParts | None = None
        self._templates: dict[tuple[int, int], _Template] = {}

    def encode(self, frame: SpectrumFrame) -> EncodeResult:
        return self.encode_many((frame,))

    def encode_many(self, frames: Sequence[SpectrumFrame]) -> EncodeResult:
        """Encode several frames into one body; consecutive frames of one layout share the work."""
        bodies: list[bytes] = []
        lines = skipped = 0
        start = 0
        while start < len(frames):
            parts = self._layout_parts(frames[start].layout)
            limit = max(1, _CHUNK_BYTES // max(1, parts.lines_per_frame * parts.row_bytes()))
            stop = start + 1
            while stop < len(frames) and stop - start < limit and frames[stop].layout is parts.layout:
                stop += 1
            body, n, s = self._render(parts, frames[start:stop])
            bodies.append(body)
            lines += n
            skipped += s
            start = stop
        return EncodeResult(bodies[0] if len(bodies) == 1 else b"".join(bodies), lines, skipped)

    def _layout_parts(self, layout: FrameLayout) -> _LayoutParts:
        if self._parts is not None and self._parts.layout is layout:
            return self._parts
        names = [escape_key(n) for n in bin_field_names(layout.frequencies)]
        stream = escape_key(layout.stream)
        prefixes: list[str] = []
        for channel in layout.channels:
            measurement = self._measurement or escape_measurement(channel)
            tags: list[tuple[str, str]] = []
            if self.tag_channel:
                tags.append(("channel", escape_key(channel)))
            if self.tag_stream and stream:  # an empty tag value is invalid: leave the tag out
                tags.append(("stream_name", stream))
            if self.schema == "wide":
                prefixes.append(_line_start(measurement, tags))
            else:
                prefixes.extend(_line_start(measurement, [*tags, ("frequency_bin", n)]) for n in names)
        if self.schema == "wide":
            heads = [f"{',' if i else ' '}{n}=" for i, n in enumerate(names)]
        else:
            heads = [" power="]
        self._parts = _LayoutParts(layout, _char_block(prefixes), _char_block(heads))
        self._templates.clear()
        return self._parts

    def _template(self, parts: _LayoutParts, frames: int, value_width: int, tail_width: int) -> _Template:
        key = (value_width, tail_width)
        template = self._templates.get(key)
        if template is None or template.frames < frames:
            if len(self._templates) >= _MAX_TEMPLATES:
                self._templates.clear()
            template = _Template(parts, frames, value_width, tail_width)
            self._templates[key] = template
        return template

    def _render(self, parts: _LayoutParts, frames: Sequence[SpectrumFrame]) -> tuple[bytes, int, int]:
        count, cells = len(frames), parts.cells
        rows = count * parts.lines_per_frame
        if rows == 0:
            return b"", 0, 0
        stamps = [int(f.time_ns) for f in frames]
        if not all(-_INT64 <= t < _INT64 for t in stamps):
            raise ValueError("frame timestamps must fit a signed 64-bit count of nanoseconds")
        values = frames[0].power_db if count == 1 else np.stack([f.power_db for f in frames])
        scaled = np.multiply(values, self._scale, dtype=np.float64).reshape(rows, cells)
        ok = np.abs(scaled) < self._limit  # False for NaN and +-inf too
        line_ok = ok.all(axis=1)
        all_ok = bool(line_ok.all())
        if not all_ok:
            scaled[~ok] = 0.0
        words = _value_words(np.rint(scaled, out=scaled).astype(np.int64).ravel(), self.decimals)
        tails = _tail_words(stamps)

        template = self._template(parts, count, words.shape[1] * 8, tails.shape[1] * 8)
        template.values[:rows] = words.reshape(rows, cells, -1)
        template.tails[:count] = tails[:, None, :]
        matrix = template.buf[:rows] if all_ok else template.buf[:rows][line_ok]
        kept = len(matrix)
        return matrix.tobytes().translate(None, b"\0"), kept, (rows - kept) * cells


def _line_start(measurement: str, tags: list[tuple[str, str]]) -> str:
    return ",".join([measurement] + [f"{k}={v}" for k, v in sorted(tags)])
