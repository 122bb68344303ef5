r"""The live page's wire format: one compact binary message per frame, encoded once for every viewer.

A 256 x 129 float32 frame is 132 kB; the page only colours pixels, for which 8 bits per value are
plenty, so spectra travel (and are kept as history) as uint8 quantised between the frame's own
finite minimum and maximum, with that scale in the header. That is 33 kB per frame, a quarter of
float32, so 60 s of history at 256 ch x 2 kHz (hop 128) is ~31 MB instead of ~124 MB. Band power
(a few values per channel) stays float32; quality is one state byte and one flag byte per channel.

Layout of a frame message (little endian; offsets in bytes)::

    0   u8    kind = 1 (frame)
    1   u8    flags: bit 0 band power present, bit 1 quality present
    2   u16   n_channels
    4   u16   n_frequencies
    6   u16   n_bands (rows of band power present, else 0)
    8   u32   seq (frame counter, modulo 2**32)
    12  f32   db_min   \ value = db_min + q * (db_max - db_min) / 254 for q in 0..254
                     |  (db_min is at most 120 dB below db_max: lower values are clipped to it);
    16  f32   db_max   / q = 255: not a finite number
    20  f64   time_ms  Unix time of the window centre, ms
    28  u32   reserved (0)
    32  f32   band_db[n_bands][n_channels]                     (if flag bit 0)
    ..  u8    quality state[n_channels], flags[n_channels]     (if flag bit 1)
    ..  u8    power[n_channels][n_frequencies]

Everything that does not change per frame (stream, channels, frequencies, bands) is sent once as
JSON (:func:`layout_message`); the page (``bridge/view/view.js``) decodes both.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from bridge.frame import QUALITY_FLAGS, QUALITY_STATES, FrameLayout, SpectrumFrame

KIND_FRAME = 1
FLAG_BANDS = 1
FLAG_QUALITY = 2
HEADER = struct.Struct("<BBHHHIffdI")
assert HEADER.size == 32
#: Quantisation levels for finite values (0..254); 255 marks a non-finite value.
LEVELS = 254
NOT_FINITE = 255
#: Widest range a frame is quantised over (0.47 dB per level); lower values are clipped to its bottom.
DYNAMIC_RANGE_DB = 120.0


def encode_frame(frame: SpectrumFrame) -> bytes:
    """One frame as a binary message; called once per frame and shared by every connection."""
    power = frame.power_db
    finite = np.isfinite(power)
    all_finite = bool(finite.all())
    if all_finite:
        low, high = float(power.min()), float(power.max())
    elif finite.any():
        low, high = float(power[finite].min()), float(power[finite].max())
    else:
        low = high = 0.0
    # A dead channel (exact zeros: -300 dB) must not spread the scale so wide that every other
    # channel is left with a few levels: values further below the maximum sit at the bottom.
    low = max(low, high - DYNAMIC_RANGE_DB)
    span = high - low
    scale = LEVELS / span if span > 0 else 0.0
    with np.errstate(invalid="ignore"):
        levels = np.rint((power - np.float32(low)) * np.float32(scale))
        np.clip(levels, 0, LEVELS, out=levels)
    if not all_finite:
        levels[~finite] = NOT_FINITE
    quantised = levels.astype(np.uint8)

    flags = 0
    parts: list[bytes] = []
    n_bands = 0
    if frame.band_db is not None:
        flags |= FLAG_BANDS
        n_bands = frame.band_db.shape[0]
        parts.append(np.ascontiguousarray(frame.band_db, dtype="<f4").tobytes())
    if frame.quality is not None:
        flags |= FLAG_QUALITY
        parts.append(frame.quality.state.astype(np.uint8).tobytes())
        parts.append(frame.quality.flags.astype(np.uint8).tobytes())
    n_channels, n_freqs = frame.layout.shape
    header = HEADER.pack(
        KIND_FRAME, flags, n_channels, n_freqs, n_bands, frame.seq & 0xFFFFFFFF,
        low, high, frame.time_ns / 1e6, 0,
    )
    return b"".join((header, *parts, quantised.tobytes()))


def decode_frame(message: bytes) -> dict[str, Any]:
    """The inverse, for tests and tools: dB values come back within half a quantisation step."""
    kind, flags, n_channels, n_freqs, n_bands, seq, low, high, time_ms, _ = HEADER.unpack_from(message)
    if kind != KIND_FRAME:
        raise ValueError(f"not a frame message (kind {kind})")
    offset = HEADER.size
    out: dict[str, Any] = {"seq": seq, "time_ms": time_ms, "db_min": low, "db_max": high,
                           "band_db": None, "quality_state": None, "quality_flags": None}
    if flags & FLAG_BANDS:
        size = 4 * n_bands * n_channels
        out["band_db"] = np.frombuffer(message, "<f4", n_bands * n_channels, offset).reshape(n_bands, n_channels)
        offset += size
    if flags & FLAG_QUALITY:
        out["quality_state"] = np.frombuffer(message, np.uint8, n_channels, offset)
        out["quality_flags"] = np.frombuffer(message, np.uint8, n_channels, offset + n_channels)
        offset += 2 * n_channels
    q = np.frombuffer(message, np.uint8, n_channels * n_freqs, offset).reshape(n_channels, n_freqs)
    values = low + q.astype(np.float64) * ((high - low) / LEVELS)
    values[q == NOT_FINITE] = np.nan
    out["power_db"] = values
    return out


def layout_message(layout: FrameLayout, history_sec: float) -> str:
    """What stays fixed while the stream keeps its shape, sent before any frame of it."""
    return json.dumps({
        "type": "layout",
        "stream": layout.stream,
        "channels": list(layout.channels),
        "frequencies": [float(f) for f in layout.frequencies],
        "srate": layout.srate,
        "bands": [{"name": b.name, "low": b.low_hz, "high": b.high_hz} for b in layout.bands],
        "quality_states": list(QUALITY_STATES),
        "quality_flags": QUALITY_FLAGS,
        "history_sec": history_sec,
    })


def markers_message(markers: list[tuple[float, str]]) -> str:
    """Markers as ``[time_ms, text]`` pairs (Unix ms)."""
    return json.dumps({"type": "markers", "items": [[t, text] for t, text in markers]})
