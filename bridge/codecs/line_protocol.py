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
import threading
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from bridge.frame import FrameLayout, SpectrumFrame

__all__ = [
    "Column",
    "DerivedEncoder",
    "EncodeResult",
    "LineProtocolEncoder",
    "TableEncoder",
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
    if decimals == 6 and largest < 10 and not negative.any():  # fractions: 'd.dddddd', one word
        chars = np.empty((fixed.size, 8), dtype=np.uint8)
        chars[:, 0] = int_part + ord("0")
        chars[:, 1] = ord(".")
        chars[:, 2:] = _digits(frac_part, 6)
        return chars.view(np.uint64)
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


def _layout_parts(layout: FrameLayout, prefixes: Sequence[str], fields: Sequence[str]) -> _LayoutParts:
    """Parts for lines with these (escaped) prefixes and explicitly named (escaped) fields."""
    heads = [f"{',' if i else ' '}{name}=" for i, name in enumerate(fields)]
    return _LayoutParts(layout, _char_block(prefixes), _char_block(heads))


def _channel_tags(layout: FrameLayout, tag_channel: bool, tag_stream: bool) -> list[list[tuple[str, str]]]:
    """The tag set of each channel's lines (``channel``, ``stream_id``, ``stream_name``), escaped.

    ``stream_id`` (the stream's key in the bridge) keeps two same-named streams of two hosts apart;
    a layout made without a key (tests, tools) has no such tag.
    """
    stream, key = escape_key(layout.stream), escape_key(layout.key)
    tag_sets: list[list[tuple[str, str]]] = []
    for channel in layout.channels:
        tags: list[tuple[str, str]] = []
        if tag_channel:
            tags.append(("channel", escape_key(channel)))
        if tag_stream and key:
            tags.append(("stream_id", key))
        if tag_stream and stream:  # an empty tag value is invalid: leave the tag out
            tags.append(("stream_name", stream))
        tag_sets.append(tags)
    return tag_sets


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
        prefixes: list[str] = []
        for channel, tags in zip(layout.channels, _channel_tags(layout, self.tag_channel, self.tag_stream)):
            measurement = self._measurement or escape_measurement(channel)
            if self.schema == "wide":
                prefixes.append(_line_start(measurement, tags))
            else:
                prefixes.extend(_line_start(measurement, [*tags, ("frequency_bin", n)]) for n in names)
        self._parts = _layout_parts(layout, prefixes, names if self.schema == "wide" else ["power"])
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
        products = [shared_value_words(f, self.decimals) for f in frames]
        if count == 1:
            words = products[0].words
        else:  # frames may differ in word count (a wider integer part): right-align, NUL-pad
            width = max(p.words.shape[1] for p in products)
            words = np.zeros((count, products[0].words.shape[0], width), dtype=np.uint64)
            for k, product in enumerate(products):
                words[k, :, width - product.words.shape[1] :] = product.words
        if all(p.ok is None for p in products):
            line_ok, all_ok = None, True
        else:
            ok = np.stack([np.ones(cells * parts.lines_per_frame, bool) if p.ok is None else p.ok for p in products])
            line_ok = ok.reshape(rows, cells).all(axis=1)
            all_ok = bool(line_ok.all())
        tails = _tail_words(stamps)

        template = self._template(parts, count, words.shape[-1] * 8, tails.shape[1] * 8)
        template.values[:rows] = words.reshape(rows, cells, -1)
        template.tails[:count] = tails[:, None, :]
        matrix = template.buf[:rows] if all_ok else template.buf[:rows][line_ok]
        kept = len(matrix)
        return matrix.tobytes().translate(None, b"\0"), kept, (rows - kept) * cells


@dataclass(frozen=True, eq=False)
class ValueWords:
    """A frame's spectrum as fixed-point text words: the part of encoding every sink repeats.

    ``words`` is (channels * bins, n) uint64, right-aligned and NUL-padded; ``ok`` is None when
    every value is writable, else a bool mask (False for non-finite or too large values, whose
    words are a placeholder ``0.000`` in lines the encoders drop).
    """

    words: np.ndarray
    ok: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return self.words.nbytes + (0 if self.ok is None else self.ok.nbytes)


def _compute_value_words(values: np.ndarray, decimals: int) -> ValueWords:
    scale = float(10**decimals)
    scaled = np.multiply(values, scale, dtype=np.float64).ravel()
    ok = np.abs(scaled) < MAX_ABS_VALUE * scale  # False for NaN and +-inf too
    all_ok = bool(ok.all())
    if not all_ok:
        scaled[~ok] = 0.0
    words = _value_words(np.rint(scaled, out=scaled).astype(np.int64), decimals)
    for array in (words, ok):
        array.setflags(write=False)  # shared between sink threads
    return ValueWords(words, None if all_ok else ok)


class _SharedWords:
    """The value words of frames some sink still holds, computed by whichever sink encodes first.

    Every sink formats the same dB values to the same digits (only the line templates around
    them differ), so the words are made once per frame and shared. An entry lives only as long
    as its frame: it is keyed by a weak reference, so the cache never keeps a frame alive, and
    the words go when the last sink lets go of the frame. (A strong-keyed LRU of 16 MB held ~40
    frames of 256 x 129 and their words long after both sinks were done: ~16 MB of the bridge's
    peak at 256 ch x 2 kHz, bench/memprofile.py.) ``max_bytes`` still bounds the words when a
    sink falls far behind, least recently used first out: that sink simply recomputes, with
    identical output. Thread-safe; two sinks racing on one frame at worst both compute it, and
    the first result is kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[int, int], tuple[weakref.ref[SpectrumFrame], ValueWords]] = OrderedDict()
        self._bytes = 0
        # Weakref callbacks run wherever the frame dies (any thread, even inside this class's
        # own locked code when an allocation triggers the GC), so they only queue the id here.
        self._dead: deque[int] = deque()

    def __len__(self) -> int:
        with self._lock:
            self._purge()
            return len(self._items)

    def _purge(self) -> None:
        while self._dead:
            ident = self._dead.popleft()
            for key in [k for k in self._items if k[0] == ident and self._items[k][0]() is None]:
                self._bytes -= self._items.pop(key)[1].nbytes

    def get(self, frame: SpectrumFrame, decimals: int) -> ValueWords:
        key = (id(frame), decimals)
        with self._lock:
            self._purge()
            found = self._items.get(key)
            if found is not None and found[0]() is frame:
                self._items.move_to_end(key)
                return found[1]
        product = _compute_value_words(frame.power_db, decimals)
        with self._lock:
            self._purge()
            found = self._items.get(key)
            if found is not None and found[0]() is frame:
                return found[1]
            if found is not None:  # a dead frame's id reused before its callback was seen
                self._bytes -= found[1].nbytes
            self._items[key] = (weakref.ref(frame, lambda _ref, ident=id(frame): self._dead.append(ident)), product)
            self._bytes += product.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
        return product

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._dead.clear()
            self._bytes = 0


#: Words of ~30 frames of 256 x 129 when a sink lags: entries normally go with their frames.
SHARED_WORDS = _SharedWords(8 << 20)


def shared_value_words(frame: SpectrumFrame, decimals: int = 3) -> ValueWords:
    """The frame's value words at ``decimals``, computed once for all sinks (see _SharedWords)."""
    return SHARED_WORDS.get(frame, decimals)


def _line_start(measurement: str, tags: list[tuple[str, str]]) -> str:
    return ",".join([measurement] + [f"{k}={v}" for k, v in sorted(tags)])


# ---- tables with explicitly named fields: band power, channel quality -------------------------


@dataclass(frozen=True)
class Column:
    """A field of a table: fixed-point with ``decimals`` digits; or, with ``decimals=0``, a
    whole number 0..255 (state codes, flag sets), as an integer field ``<n>i`` when ``integer``,
    else as bare digits (a float field)."""

    name: str
    decimals: int = 3
    integer: bool = False


def _small_words(suffix: bytes) -> np.ndarray:
    text = [str(i).encode().rjust(8 - len(suffix), b"\0") + suffix for i in range(256)]
    return np.frombuffer(b"".join(text), dtype=np.uint64).copy()


_SMALL_WORDS = {True: _small_words(b"i"), False: _small_words(b"")}


@dataclass(frozen=True, eq=False)
class _TableParts:
    parts: _LayoutParts
    columns: tuple[Column, ...]
    #: byte offset in a row of each cell's separator (' ' or ','), heads being NUL-padded left
    separators: np.ndarray


#: (layout) -> (line prefixes, columns): what one frame's lines of a table look like.
TableShape = Callable[[FrameLayout], tuple[list[str], tuple[Column, ...]]]
#: (frame) -> values (lines, cells) float64, or None when the frame has no such product.
TableValues = Callable[[SpectrumFrame], "np.ndarray | None"]


class TableEncoder:
    """Lines of explicitly named fields for any per-frame table, on the spectra's machinery.

    The same character-matrix rendering as :class:`LineProtocolEncoder` (prefixes and heads
    written once per layout, values as table-built words, one ``translate`` to compact), plus
    what small mixed tables need: per-column decimals, integer fields, and leaving out single
    non-finite cells (a NaN number is left out of its line, not the whole line). A line with no
    cell left is dropped. One instance per thread.
    """

    def __init__(self, shape: TableShape, values: TableValues, *, whole_lines: bool = False) -> None:
        """``whole_lines``: a line with any unwritable number is left out whole (Grafana Live,
        where a line with fewer fields changes the channel's schema), instead of just the cell."""
        self._shape = shape
        self._values = values
        self._whole_lines = whole_lines
        self._parts: _TableParts | None = None
        self._template: _Template | None = None

    def encode_many(self, frames: Sequence[SpectrumFrame]) -> EncodeResult:
        bodies: list[bytes] = []
        lines = skipped = 0
        start = 0
        while start < len(frames):
            stop = start + 1
            while stop < len(frames) and frames[stop].layout is frames[start].layout:
                stop += 1
            chosen = [(f, v) for f in frames[start:stop] if (v := self._values(f)) is not None]
            if chosen:
                body, n, s = self._render(self._table_parts(frames[start].layout), chosen)
                bodies.append(body)
                lines += n
                skipped += s
            start = stop
        return EncodeResult(b"".join(bodies), lines, skipped)

    def _table_parts(self, layout: FrameLayout) -> _TableParts:
        if self._parts is not None and self._parts.parts.layout is layout:
            return self._parts
        prefixes, columns = self._shape(layout)
        parts = _layout_parts(layout, prefixes, [escape_key(c.name) for c in columns])
        head_width = parts.head.shape[1]
        lengths = np.array([len(escape_key(c.name)) + 2 for c in columns])
        self._parts = _TableParts(parts, columns, head_width - lengths)
        self._template = None
        return self._parts

    def _render(self, table: _TableParts, chosen: list[tuple[SpectrumFrame, np.ndarray]]) -> tuple[bytes, int, int]:
        parts, columns = table.parts, table.columns
        count, lpf, cells = len(chosen), parts.lines_per_frame, parts.cells
        rows = count * lpf
        stamps = [int(f.time_ns) for f, _ in chosen]
        if not all(-_INT64 <= t < _INT64 for t in stamps):
            raise ValueError("frame timestamps must fit a signed 64-bit count of nanoseconds")
        values = np.stack([v for _, v in chosen]).reshape(rows, cells).astype(np.float64)
        ok = np.empty((rows, cells), dtype=bool)
        groups: list[tuple[np.ndarray, np.ndarray]] = []
        for decimals, integer in sorted({(c.decimals, c.integer) for c in columns}):
            index = np.array([j for j, c in enumerate(columns) if (c.decimals, c.integer) == (decimals, integer)])
            block = values[:, index]
            if decimals == 0:
                good = (block >= 0) & (block <= 255)  # False for NaN too
                words = _SMALL_WORDS[integer][np.where(good, block, 0).astype(np.int64)].reshape(-1, 1)
            else:
                scaled = block * float(10**decimals)
                good = np.abs(scaled) < MAX_ABS_VALUE * 10**decimals
                scaled[~good] = 0.0
                words = _value_words(np.rint(scaled).astype(np.int64).ravel(), decimals)
            ok[:, index] = good
            groups.append((index, words.reshape(rows, index.size, -1)))
        width = max(w.shape[-1] for _, w in groups)
        tails = _tail_words(stamps)
        template = self._template
        if template is None or template.frames < count or template.values.shape[-1] != width or template.tails.shape[-1] != tails.shape[1]:
            template = _Template(parts, count, width * 8, tails.shape[1] * 8)
        for index, words in groups:
            if words.shape[-1] == width and index.size == cells:
                template.values[:rows] = words
                continue
            target = np.zeros((rows, index.size, width), dtype=np.uint64)
            target[..., width - words.shape[-1] :] = words
            template.values[:rows, index] = target
        template.tails[:count] = tails[:, None, :]
        buf = template.buf[:rows]
        if self._whole_lines:
            ok[~ok.all(axis=1)] = False
        kept_line = ok.any(axis=1)
        self._template = template
        if ok.all():
            return buf.tobytes().translate(None, b"\0"), rows, 0
        # Leave out the unwritable cells (head and value blanked to NUL); the first cell kept in
        # a line takes the ' ' after the tag set. Both are undone afterwards, so the template
        # stays reusable.
        p, h = parts.prefix.shape[1], parts.head.shape[1]
        cell_width = h + width * 8
        cellview = buf[:, p : p + cells * cell_width].reshape(rows, cells, cell_width)
        cellview[~ok] = 0
        first = ok.argmax(axis=1)
        moved = np.flatnonzero(kept_line & (first > 0))
        separators = p + first[moved] * cell_width + table.separators[first[moved]]
        buf[moved, separators] = ord(" ")
        matrix = buf if kept_line.all() else buf[kept_line]
        body = matrix.tobytes().translate(None, b"\0")
        buf[moved, separators] = ord(",")
        cellview[..., :h][~ok] = parts.head[np.nonzero(~ok)[1]]
        return body, len(matrix), int(rows * cells - np.count_nonzero(ok))


class DerivedEncoder:
    """The archive's band power and quality lines (docs/data-model.md ``eeg_bands``, ``eeg_quality``).

    ``<bands> ,channel=,stream_name= <band>=<dB>,<band>_rel=<fraction>,...`` and
    ``<quality> ,channel=,stream_name= std=,dc_offset=,rail_fraction=,line_noise_db=,hf_ratio_db=,state=<n>i,flags=<n>i``,
    one line per channel of every frame that carries the product. dB values and the quality
    numbers in dB or stream units are written with 3 decimals, fractions with 6.
    """

    def __init__(self, *, bands_measurement: str = "eeg_bands", quality_measurement: str = "eeg_quality") -> None:
        bands_name = escape_measurement(bands_measurement)
        quality_name = escape_measurement(quality_measurement)

        def band_shape(layout: FrameLayout) -> tuple[list[str], tuple[Column, ...]]:
            columns = tuple(c for b in layout.bands for c in (Column(b.name, 3), Column(f"{b.name}_rel", 6)))
            return [_line_start(bands_name, t) for t in _channel_tags(layout, True, True)], columns

        def quality_shape(layout: FrameLayout) -> tuple[list[str], tuple[Column, ...]]:
            return [_line_start(quality_name, t) for t in _channel_tags(layout, True, True)], QUALITY_COLUMNS

        self.bands = TableEncoder(band_shape, _band_values)
        self.quality = TableEncoder(quality_shape, _quality_values)

    def encode_many(self, frames: Sequence[SpectrumFrame]) -> EncodeResult:
        bands = self.bands.encode_many(frames)
        quality = self.quality.encode_many(frames)
        return EncodeResult(bands.body + quality.body, bands.lines + quality.lines, bands.values_skipped + quality.values_skipped)


QUALITY_COLUMNS = (
    Column("std", 3),
    Column("dc_offset", 3),
    Column("rail_fraction", 6),
    Column("line_noise_db", 3),
    Column("hf_ratio_db", 3),
    Column("state", 0, integer=True),
    Column("flags", 0, integer=True),
)


def _band_values(frame: SpectrumFrame) -> np.ndarray | None:
    if frame.band_db is None or frame.band_rel is None or not frame.layout.bands:
        return None
    # (bands, channels) x2 -> (channels, bands * 2): band, band_rel interleaved
    return np.stack([frame.band_db.T, frame.band_rel.T], axis=-1).reshape(len(frame.layout.channels), -1)


def _quality_values(frame: SpectrumFrame) -> np.ndarray | None:
    quality = frame.quality
    if quality is None:
        return None
    return np.concatenate([quality.values, quality.state[None, :], quality.flags[None, :]]).T
