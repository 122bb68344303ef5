"""The live page's binary frame: what the browser decodes equals the frame within half a quantisation step."""

from __future__ import annotations

import json
import struct

import numpy as np

from bridge.codecs.view import decode_frame, encode_frame, layout_message
from bridge.frame import Band, ChannelQuality, FrameLayout, SpectrumFrame

LAYOUT = FrameLayout("S", ("a", "b", "c"), np.array([0.0, 1.0, 2.0, 3.0]), 4.0, (Band("low", 0, 2), Band("high", 2, 4)))


def frame(power: np.ndarray, **derived: object) -> SpectrumFrame:
    return SpectrumFrame(LAYOUT, 7, 1_700_000_000_123_456_789, 1_700_000_000_200_000_000, power.astype(np.float32), **derived)  # type: ignore[arg-type]


def test_values_come_back_within_half_a_step_and_the_header_is_exact() -> None:
    power = np.array([[-40.0, -10.5, 0.25, 3.0], [12.0, -7.75, 20.0, -40.0], [5.5, 5.5, 5.5, 1.0]])
    message = encode_frame(frame(power))
    assert len(message) == 32 + 3 * 4  # header + one byte per value
    kind, flags, n_ch, n_f, n_b, seq, low, high, time_ms, _ = struct.unpack_from("<BBHHHIffdI", message)
    assert (kind, flags, n_ch, n_f, n_b, seq, low, high) == (1, 0, 3, 4, 0, 7, -40.0, 20.0)
    assert time_ms == 1_700_000_000_123_456_789 / 1e6
    decoded = decode_frame(message)
    step = (20.0 - -40.0) / 254
    assert np.max(np.abs(decoded["power_db"] - power)) <= step / 2 + 1e-6
    assert decoded["power_db"][0, 0] == -40.0 and decoded["power_db"][1, 2] == 20.0  # the ends are exact


def test_non_finite_values_are_marked_and_do_not_stretch_the_scale() -> None:
    power = np.array([[np.nan, 1.0, 2.0, 3.0], [np.inf, 4.0, 5.0, 6.0], [-np.inf, 7.0, 8.0, 9.0]])
    decoded = decode_frame(encode_frame(frame(power)))
    assert (decoded["db_min"], decoded["db_max"]) == (1.0, 9.0)
    assert np.isnan(decoded["power_db"][:, 0]).all()
    assert np.max(np.abs(decoded["power_db"][:, 1:] - power[:, 1:])) <= 8.0 / 254 / 2 + 1e-6


def test_band_power_and_quality_travel_with_the_frame() -> None:
    bands = np.array([[1.5, 2.5, 3.5], [-1.0, -2.0, -3.0]], dtype=np.float32)
    quality = ChannelQuality(state=np.array([0, 1, 2], dtype=np.int8), flags=np.array([0, 4, 3], dtype=np.uint8),
                             values=np.full((5, 3), np.nan, dtype=np.float32))
    power = np.zeros((3, 4))
    message = encode_frame(frame(power, band_db=bands, band_rel=bands, quality=quality))
    assert message[1] == 3 and struct.unpack_from("<H", message, 6) == (2,)
    decoded = decode_frame(message)
    assert np.array_equal(decoded["band_db"], bands)
    assert decoded["quality_state"].tolist() == [0, 1, 2] and decoded["quality_flags"].tolist() == [0, 4, 3]
    assert np.array_equal(decoded["power_db"], power)  # a flat frame: every value is the minimum


def test_layout_message_names_what_frames_do_not_carry() -> None:
    layout = json.loads(layout_message(LAYOUT, 60.0))
    assert layout == {
        "type": "layout", "stream": "S", "channels": ["a", "b", "c"], "frequencies": [0.0, 1.0, 2.0, 3.0], "srate": 4.0,
        "bands": [{"name": "low", "low": 0, "high": 2}, {"name": "high", "low": 2, "high": 4}],
        "quality_states": ["good", "warn", "bad"], "quality_flags": {"flat": 1, "railed": 2, "line_noise": 4, "hf_noise": 8},
        "history_sec": 60.0,
    }


def test_a_dead_channel_does_not_coarsen_the_others() -> None:
    power = np.array([[-300.0] * 4, [10.0, 20.0, 30.0, 40.0], [12.5, 22.5, 32.5, 42.5]])  # a channel of exact zeros
    decoded = decode_frame(encode_frame(frame(power)))
    assert (decoded["db_min"], decoded["db_max"]) == (42.5 - 120.0, 42.5)
    assert np.array_equal(decoded["power_db"][0], [42.5 - 120.0] * 4)  # clipped to the bottom of the range
    assert np.max(np.abs(decoded["power_db"][1:] - power[1:])) <= 120.0 / 254 / 2 + 1e-5
