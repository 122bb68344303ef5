"""The encoder against an independent reading of line protocol and hand-written bodies."""

from __future__ import annotations

import numpy as np
import pytest

import bridge.codecs.line_protocol as lp
from bridge.frame import FrameLayout, SpectrumFrame
from bridge.codecs.line_protocol import (
    EncodeResult,
    LineProtocolEncoder,
    bin_field_names,
    escape_key,
    escape_measurement,
)

TS = 1732252800125000000
GRAFANA = dict(measurement=None, tag_channel=False, tag_stream=False)


# ---- an independent line-protocol reader ------------------------------------------------------
def split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` where it is not backslash-escaped, keeping escapes in the parts."""
    parts, current, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current += text[i : i + 2]
            i += 2
            continue
        if ch == sep and maxsplit != 0:
            parts.append(current)
            current = ""
            maxsplit -= 1
        else:
            current += ch
        i += 1
    return parts + [current]


def unescape(text: str) -> str:
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ",= \\":
            out += text[i + 1]
            i += 2
        else:
            out += text[i]
            i += 1
    return out


def parse(body: bytes) -> list[tuple[str, dict[str, str], list[tuple[str, str]], int]]:
    """(measurement, tags, [(field, raw value)], timestamp) per line; asserts the syntax."""
    text = body.decode("ascii")
    assert text == "" or text.endswith("\n")
    lines = []
    for line in text.splitlines():
        series, fields, stamp = split_unescaped(line, " ")
        measurement, *tags = split_unescaped(series, ",")
        tag_pairs = [split_unescaped(t, "=", 1) for t in tags]
        assert [k for k, _ in tag_pairs] == sorted(k for k, _ in tag_pairs), "tag keys must be sorted"
        field_pairs = [split_unescaped(f, "=", 1) for f in split_unescaped(fields, ",")]
        lines.append(
            (
                unescape(measurement),
                {unescape(k): unescape(v) for k, v in tag_pairs},
                [(unescape(k), v) for k, v in field_pairs],
                int(stamp),
            )
        )
    return lines


def py_fixed(x: float, decimals: int = 3) -> str:
    """What the data model asks for, the plain-Python way."""
    text = f"{float(x):.{decimals}f}"
    return text[1:] if text.lstrip("-0.") == "" and text.startswith("-") else text


def layout(channels=("Fz", "Cz"), freqs=(0.0, 1.953125, 3.90625), stream="SimEEG") -> FrameLayout:
    return FrameLayout(stream, tuple(channels), np.array(freqs, dtype=np.float64))


def frame(lay: FrameLayout, values, time_ns: int = TS) -> SpectrumFrame:
    return SpectrumFrame(lay, 0, time_ns, time_ns, np.asarray(values, dtype=np.float32))


SMALL = [[12.345, -0.5, 0.0], [9.9996, -0.0004, 12345.678]]


# ---- whole bodies -------------------------------------------------------------------------------
def test_wide_body_matches_hand_written_lines() -> None:
    body = LineProtocolEncoder().encode(frame(layout(), SMALL)).body
    assert body == (
        b"eeg_spectrum,channel=Fz,stream_name=SimEEG 000.00=12.345,001.95=-0.500,003.91=0.000 1732252800125000000\n"
        b"eeg_spectrum,channel=Cz,stream_name=SimEEG 000.00=10.000,001.95=0.000,003.91=12345.678 1732252800125000000\n"
    )


def test_grafana_live_body_has_channel_measurements_and_no_tags() -> None:
    result = LineProtocolEncoder(**GRAFANA).encode(frame(layout(), SMALL))
    assert result == EncodeResult(
        b"Fz 000.00=12.345,001.95=-0.500,003.91=0.000 1732252800125000000\n"
        b"Cz 000.00=10.000,001.95=0.000,003.91=12345.678 1732252800125000000\n",
        lines=2,
        values_skipped=0,
    )


def test_long_body_has_one_line_per_channel_and_bin() -> None:
    result = LineProtocolEncoder(schema="long").encode(frame(layout(), SMALL))
    names = ["000.00", "001.95", "003.91"]
    expected = "".join(
        f"eeg_spectrum,channel={ch},frequency_bin={name},stream_name=SimEEG power={py_fixed(v)} {TS}\n"
        for ch, row in zip(["Fz", "Cz"], SMALL)
        for name, v in zip(names, np.float32(row))
    )
    assert result.body == expected.encode()
    assert (result.lines, result.values_skipped) == (6, 0)
    assert b"power=0.000 " in result.body and b"-0.000" not in result.body


@pytest.mark.parametrize("schema", ["wide", "long"])
@pytest.mark.parametrize("decimals", [1, 2, 3, 4, 6])
def test_random_bodies_equal_python_formatting(schema: str, decimals: int) -> None:
    rng = np.random.default_rng(decimals)
    lay = layout([f"ch{i}" for i in range(5)], np.linspace(0, 128, 17))
    values = rng.normal(0, 40, (5, 17)) * rng.choice([1e-4, 1, 1e3, 1e6, 1e9], (5, 17))
    values[0, :4] = [0.0625, -0.0625, 0.0005, -0.0005]  # exact ties and near-ties
    f = frame(lay, values)
    names = bin_field_names(lay.frequencies)
    rows = [[py_fixed(v, decimals) for v in row] for row in f.power_db]
    if schema == "wide":
        expected = "".join(
            f"m,channel={ch},stream_name=SimEEG "
            + ",".join(f"{n}={v}" for n, v in zip(names, row))
            + f" {TS}\n"
            for ch, row in zip(lay.channels, rows)
        )
    else:
        expected = "".join(
            f"m,channel={ch},frequency_bin={n},stream_name=SimEEG power={v} {TS}\n"
            for ch, row in zip(lay.channels, rows)
            for n, v in zip(names, row)
        )
    assert LineProtocolEncoder(schema=schema, measurement="m", decimals=decimals).encode(f).body == expected.encode()


def test_parsed_values_equal_rounded_input() -> None:
    rng = np.random.default_rng(7)
    lay = layout([f"ch{i}" for i in range(16)], np.arange(33) * 500 / 64)
    values = rng.normal(-20, 60, (16, 33)).astype(np.float32)
    values[3] *= 1000
    result = LineProtocolEncoder().encode(frame(lay, values))
    parsed = parse(result.body)
    assert result.lines == len(parsed) == 16
    names = bin_field_names(lay.frequencies)
    for (measurement, tags, fields, stamp), ch, row in zip(parsed, lay.channels, values):
        assert (measurement, tags, stamp) == ("eeg_spectrum", {"channel": ch, "stream_name": "SimEEG"}, TS)
        assert [k for k, _ in fields] == list(names)
        got = np.array([float(v) for _, v in fields])
        exact = row.astype(np.float64)
        tolerance = 0.0005 + np.abs(exact) * 2.0**-23
        np.testing.assert_array_less(np.abs(got - np.round(exact, 3)), tolerance)
        for _, v in fields:
            whole, point, frac = v.lstrip("-").partition(".")
            assert whole.isdigit() and point == "." and len(frac) == 3 and frac.isdigit()


def test_widths_change_between_frames_without_stale_digits() -> None:
    encoder = LineProtocolEncoder(**GRAFANA)
    lay = layout(["A"], [0.0, 1.0])
    for values in ([1.5, -2.25], [123456.5, -9.0], [1.5, -2.25], [-987654321.125, 0.001], [7.0, 8.0]):
        first, second = np.float32(values)
        expected = f"A 000.00={py_fixed(first)},001.00={py_fixed(second)} {TS}\n"
        assert encoder.encode(frame(lay, [values])).body == expected.encode()


# ---- escaping -----------------------------------------------------------------------------------
def test_escape_functions() -> None:
    assert escape_measurement("my meas,x=1") == r"my\ meas\,x=1"
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert escape_key("line\nbreak\r") == r"line\ break\ "
    assert escape_key("C:\\eeg") == "C:\\eeg"  # a lone backslash is literal
    assert escape_key("ends\\") == "ends\\\\"  # would otherwise escape the separator
    assert escape_key("a\\,b") == "a\\\\\\,b"
    for bad in ("", "#comment"):
        with pytest.raises(ValueError):
            escape_measurement(bad)


def test_user_stream_and_measurement_names_are_escaped_and_parse_back() -> None:
    lay = layout(stream="Sim EEG, run=1")
    for schema in ("wide", "long"):
        result = LineProtocolEncoder(schema=schema, measurement="eeg spectrum,v2").encode(frame(lay, SMALL))
        assert b"stream_name=Sim\\ EEG\\,\\ run\\=1 " in result.body
        assert result.body.startswith(b"eeg\\ spectrum\\,v2,channel=Fz,")
        for measurement, tags, _, _ in parse(result.body):
            assert measurement == "eeg spectrum,v2"
            assert tags["stream_name"] == "Sim EEG, run=1"


def test_empty_stream_name_leaves_the_tag_out() -> None:
    body = LineProtocolEncoder().encode(frame(layout(stream=""), SMALL)).body
    assert body.startswith(b"eeg_spectrum,channel=Fz 000.00=")


def test_invalid_configuration_is_rejected() -> None:
    invalid = (dict(schema="long", measurement=None), dict(schema="tall"), dict(decimals=0), dict(measurement="#x"))
    for kwargs in invalid:
        with pytest.raises(ValueError):
            LineProtocolEncoder(**kwargs)


# ---- bin names ----------------------------------------------------------------------------------
def test_bin_field_names_at_500_hz_nperseg_256() -> None:
    names = bin_field_names(np.fft.rfftfreq(256, 1 / 500))
    assert len(names) == 129
    assert names[:3] == ("000.00", "001.95", "003.91") and names[-1] == "250.00"


def test_bin_field_names_add_decimals_only_when_needed() -> None:
    assert bin_field_names(np.arange(8) * 0.125)[:3] == ("000.00", "000.12", "000.25")  # distinct at 2
    assert bin_field_names(np.arange(4) * 0.004) == ("000.000", "000.004", "000.008", "000.012")
    assert bin_field_names(np.array([1.0, 1.0 + 1e-6]))[1] == "001.000001"


def test_bin_field_names_widen_integer_part_for_high_frequencies() -> None:
    assert bin_field_names(np.array([0.0, 500.0, 1000.5])) == ("0000.00", "0500.00", "1000.50")
    assert bin_field_names(np.array([5.0, 999.999])) == ("0005.00", "1000.00")


@pytest.mark.parametrize("seed", range(20))
def test_bin_field_names_sort_like_their_frequencies(seed: int) -> None:
    rng = np.random.default_rng(seed)
    freqs = np.unique(np.round(rng.choice([1, 10, 1000, 20000]) * rng.random(rng.integers(2, 300)), 4))
    names = bin_field_names(freqs)
    assert len(set(names)) == len(names) == len(freqs)
    assert list(names) == sorted(names)
    assert len({len(n) for n in names}) == 1
    np.testing.assert_allclose([float(n) for n in names], freqs, atol=0.005)


@pytest.mark.parametrize("bad", [[-1.0, 2.0], [0.0, np.nan], [0.0, np.inf], [3.0, 3.0], [1.0, 1.0 + 1e-9]])
def test_bin_field_names_reject_bad_axes(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        bin_field_names(np.array(bad))


# ---- non-finite values --------------------------------------------------------------------------
BAD = [
    [1.0, 2.0, 3.0, 4.0],
    [1.0, np.nan, 3.0, 4.0],
    [-np.inf, 2.0, 3.0, 2e12],
    [1.0, 2.0, 999999995904.0, -5.0],  # the largest float32 below 1e12 is still written
]


def test_wide_schema_drops_whole_channels_with_non_finite_values() -> None:
    lay = layout(["A", "B", "C", "D"], [0, 1, 2, 3])
    result = LineProtocolEncoder().encode(frame(lay, BAD))
    parsed = parse(result.body)
    assert [tags["channel"] for _, tags, _, _ in parsed] == ["A", "D"]
    assert (result.lines, result.values_skipped) == (2, 8)
    assert parsed[1][2][2] == ("002.00", "999999995904.000")
    assert b"nan" not in result.body.lower() and b"inf" not in result.body.lower()


def test_long_schema_drops_only_non_finite_cells() -> None:
    lay = layout(["A", "B", "C", "D"], [0, 1, 2, 3])
    result = LineProtocolEncoder(schema="long").encode(frame(lay, BAD))
    parsed = parse(result.body)
    kept = [(tags["channel"], tags["frequency_bin"]) for _, tags, _, _ in parsed]
    assert ("B", "001.00") not in kept and ("C", "000.00") not in kept and ("C", "003.00") not in kept
    assert (result.lines, result.values_skipped, len(kept)) == (13, 3, 13)
    assert b"nan" not in result.body.lower() and b"inf" not in result.body.lower()


@pytest.mark.parametrize("schema", ["wide", "long"])
def test_frame_without_any_finite_line_gives_an_empty_body(schema: str) -> None:
    result = LineProtocolEncoder(schema=schema).encode(frame(layout(), np.full((2, 3), np.nan)))
    assert result == EncodeResult(b"", 0, 6)


# ---- batches and timestamps ---------------------------------------------------------------------
def test_encode_many_equals_concatenated_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    first, second = layout(), layout(["O1", "O2", "Pz"], [0.0, 2.0], stream="Other")
    frames = []
    for i in range(12):
        lay = second if i in (4, 5, 9) else first
        values = rng.normal(0, 30, lay.shape)
        values[0, 0] = np.nan if i % 5 == 0 else values[0, 0] * (1e4 if i % 3 == 0 else 1)
        frames.append(frame(lay, values, TS + i * 125_000_000 - (10**18 if i == 7 else 0)))
    for kwargs in (dict(), dict(schema="long"), GRAFANA):
        one_by_one = [LineProtocolEncoder(**kwargs).encode(f) for f in frames]
        expected = EncodeResult(
            b"".join(r.body for r in one_by_one),
            sum(r.lines for r in one_by_one),
            sum(r.values_skipped for r in one_by_one),
        )
        encoder = LineProtocolEncoder(**kwargs)
        assert encoder.encode_many(frames) == expected
        monkeypatch.setattr(lp, "_CHUNK_BYTES", 1)  # one frame per chunk
        assert encoder.encode_many(frames) == expected
        monkeypatch.undo()
    assert LineProtocolEncoder().encode_many([]) == EncodeResult(b"", 0, 0)


@pytest.mark.parametrize("stamp", [0, 5, -5, 999_999_999_999_999_999, TS, 2**63 - 1, -(2**63)])
def test_timestamps_are_written_as_plain_integers(stamp: int) -> None:
    body = LineProtocolEncoder(**GRAFANA).encode(frame(layout(), SMALL, stamp)).body
    assert body.endswith(f" {stamp}\n".encode())
    assert [p[3] for p in parse(body)] == [stamp, stamp]


def test_timestamps_of_different_widths_in_one_batch() -> None:
    lay = layout()
    stamps = [TS, 999_999_999_999_999_999, 7, TS + 1]
    body = LineProtocolEncoder().encode_many([frame(lay, SMALL, s) for s in stamps]).body
    assert [p[3] for p in parse(body)] == [s for s in stamps for _ in range(2)]


def test_timestamps_outside_int64_are_rejected() -> None:
    with pytest.raises(ValueError):
        LineProtocolEncoder().encode(frame(layout(), SMALL, 2**63))


def test_long_schema_line_count_and_bins_at_full_size() -> None:
    lay = layout([f"ch{i}" for i in range(64)], np.fft.rfftfreq(256, 1 / 500))
    values = np.random.default_rng(1).normal(0, 30, lay.shape)
    result = LineProtocolEncoder(schema="long").encode(frame(lay, values))
    parsed = parse(result.body)
    assert result.lines == len(parsed) == 64 * 129
    names = bin_field_names(lay.frequencies)
    assert [tags["frequency_bin"] for _, tags, _, _ in parsed] == list(names) * 64
    assert {fields[0][0] for _, _, fields, _ in parsed} == {"power"}


# ---- encode once: value words shared by every sink ---------------------------------------------
def random_frames(seed: int, count: int = 8) -> list[SpectrumFrame]:
    rng = np.random.default_rng(seed)
    lay = layout([f"ch{i}" for i in range(6)], np.linspace(0, 125, 21))
    frames = []
    for i in range(count):
        values = rng.normal(-10, 30, lay.shape) * rng.choice([1e-3, 1, 1e2, 1e5], lay.shape)
        if i % 3 == 1:
            values[rng.integers(6), rng.integers(21)] = rng.choice([np.nan, np.inf, 1e13])
        frames.append(SpectrumFrame(lay, i, TS + i * 512_000_000, TS, values.astype(np.float32)))
    return frames


def python_body(f: SpectrumFrame, **kwargs) -> bytes:
    """The documented output, the plain-Python way (a channel with a bad value is left out)."""
    names = bin_field_names(f.layout.frequencies)
    lines = []
    for ch, row in zip(f.layout.channels, f.power_db):
        if not np.all(np.abs(row.astype(np.float64)) < lp.MAX_ABS_VALUE):
            continue
        series = ch if kwargs.get("measurement", "") is None else f"eeg_spectrum,channel={ch},stream_name=SimEEG"
        lines.append(series + " " + ",".join(f"{n}={py_fixed(v)}" for n, v in zip(names, row)) + f" {f.time_ns}\n")
    return "".join(lines).encode()


def test_value_words_are_made_once_per_frame_and_shared_by_both_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = lp._compute_value_words
    monkeypatch.setattr(lp, "_compute_value_words", lambda values, d: made.append(id(values)) or real(values, d))
    frames = random_frames(1)
    live, archive, long = LineProtocolEncoder(**GRAFANA), LineProtocolEncoder(), LineProtocolEncoder(schema="long")
    live_bodies = [live.encode(f).body for f in frames]  # the live sink goes first, frame by frame
    archived = archive.encode_many(frames)  # the archive later, as one batch
    long.encode_many(frames)
    assert len(made) == len(frames)  # once per frame, whatever encoded it
    assert live_bodies == [python_body(f, measurement=None) for f in frames]
    assert archived.body == b"".join(python_body(f) for f in frames)


def test_shared_words_from_concurrent_sinks_give_the_same_bodies_as_unshared() -> None:
    import threading

    frames = random_frames(2, count=40)
    expected_live = [python_body(f, measurement=None) for f in frames]
    expected_archive = b"".join(python_body(f) for f in frames)
    got: dict[str, object] = {}

    def live() -> None:
        encoder = LineProtocolEncoder(**GRAFANA)
        got["live"] = [encoder.encode(f).body for f in frames]

    def archive() -> None:
        encoder = LineProtocolEncoder()
        got["archive"] = b"".join(encoder.encode_many(frames[i : i + 7]).body for i in range(0, len(frames), 7))

    threads = [threading.Thread(target=live), threading.Thread(target=archive)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got["live"] == expected_live and got["archive"] == expected_archive


def test_shared_words_stay_within_their_byte_bound() -> None:
    cache = lp._SharedWords(max_bytes=50_000)
    frames = random_frames(3, count=30)
    for f in frames:
        cache.get(f, 3)
    per_frame = lp._compute_value_words(frames[0].power_db, 3).nbytes
    assert 0 < cache._bytes <= 50_000 and len(cache) == 50_000 // per_frame
    assert list(cache._items)[-1][0] == id(frames[-1])  # the newest are kept


def test_shared_words_go_with_their_frame_and_never_keep_it_alive() -> None:
    """Memory (issue 17): the cache holds words only while some sink still holds the frame."""
    import gc
    import weakref

    cache = lp._SharedWords(max_bytes=1 << 30)
    frames = random_frames(3, count=5)
    words = [cache.get(f, 3) for f in frames]
    assert cache.get(frames[2], 3) is words[2] and len(cache) == 5  # shared, not recomputed
    ref = weakref.ref(frames[0])
    del frames[:2], words
    gc.collect()
    assert ref() is None  # the cache did not keep the frame alive
    assert len(cache) == 3 and cache._bytes == sum(lp._compute_value_words(f.power_db, 3).nbytes for f in frames)


# ---- tables with named fields: eeg_bands, eeg_quality --------------------------------------------
def derived_frame(quality_values, band_db, band_rel, state=(0, 2), flags=(0, 5)) -> SpectrumFrame:
    from bridge.frame import Band, ChannelQuality

    lay = FrameLayout("Sim EEG", ("Fz", "Cz"), np.array([0.0, 1.0]), bands=(Band("alpha", 8, 13), Band("beta", 13, 30)))
    return SpectrumFrame(
        lay, 0, TS, TS, np.zeros((2, 2), np.float32),
        band_db=np.array(band_db, np.float32), band_rel=np.array(band_rel, np.float32),
        quality=ChannelQuality(np.array(state, np.int8), np.array(flags, np.uint8), np.array(quality_values, np.float32)),
    )


def test_band_and_quality_lines_match_hand_written_ones() -> None:
    nan = float("nan")
    f = derived_frame(
        [[1.5, nan], [-0.25, nan], [0.0039062, nan], [0.5, 31.25], [-12.0, nan]],
        band_db=[[10.5, -300.0], [-3.25, 2.0]],
        band_rel=[[0.75, 0.0], [0.25, 1.0]],
    )
    result = lp.DerivedEncoder(bands_measurement="b", quality_measurement="q").encode_many([f])
    assert result.body == (
        b"b,channel=Fz,stream_name=Sim\\ EEG alpha=10.500,alpha_rel=0.750000,beta=-3.250,beta_rel=0.250000 1732252800125000000\n"
        b"b,channel=Cz,stream_name=Sim\\ EEG alpha=-300.000,alpha_rel=0.000000,beta=2.000,beta_rel=1.000000 1732252800125000000\n"
        b"q,channel=Fz,stream_name=Sim\\ EEG std=1.500,dc_offset=-0.250,rail_fraction=0.003906,line_noise_db=0.500,hf_ratio_db=-12.000,state=0i,flags=0i 1732252800125000000\n"
        b"q,channel=Cz,stream_name=Sim\\ EEG line_noise_db=31.250,state=2i,flags=5i 1732252800125000000\n"
    )
    assert (result.lines, result.values_skipped) == (4, 4)  # the four NaN numbers are left out
    parsed = parse(result.body)
    assert [m for m, *_ in parsed] == ["b", "b", "q", "q"]


def test_tables_skip_frames_without_the_product_and_batch_like_single_frames() -> None:
    rng = np.random.default_rng(4)
    frames = []
    for i in range(6):
        q = rng.normal(0, 1e4, (5, 2))
        q[rng.integers(5), rng.integers(2)] = np.nan
        f = derived_frame(q, rng.normal(0, 50, (2, 2)), rng.uniform(0, 1, (2, 2)))
        frames.append(f if i % 2 else SpectrumFrame(f.layout, i, TS + i, TS, f.power_db))  # every other: none
    encoder = lp.DerivedEncoder()
    one_by_one = [encoder.encode_many([f]) for f in frames]
    assert [r.lines for r in one_by_one] == [0, 4, 0, 4, 0, 4]
    # a batch: every frame's band lines, then every frame's quality lines
    bands = b"".join(encoder.bands.encode_many([f]).body for f in frames)
    quality = b"".join(encoder.quality.encode_many([f]).body for f in frames)
    assert encoder.encode_many(frames).body == bands + quality
    assert sorted(bands.splitlines() + quality.splitlines()) == sorted(b"".join(r.body for r in one_by_one).splitlines())
    lines = parse(quality)
    for _, tags, fields, _ in lines:
        assert tags["stream_name"] == "Sim EEG" and [k for k, _ in fields][-2:] == ["state", "flags"]
    # one NaN number per frame, in Fz or Cz: left out of its line, the rest written
    assert [sorted(len(line[2]) for line in lines[k : k + 2]) for k in (0, 2, 4)] == [[6, 7]] * 3


def test_documented_band_and_quality_lines_have_the_encoders_keys() -> None:
    from pathlib import Path

    from bridge.dsp.bands import DEFAULT_BANDS, parse_bands
    from bridge.frame import ChannelQuality

    doc = (Path(__file__).resolve().parent.parent / "docs" / "data-model.md").read_text()
    documented = {line.split(",", 1)[0]: parse(line.encode() + b"\n")[0] for line in doc.splitlines() if line.startswith(("eeg_bands,", "eeg_quality,"))}
    bands = parse_bands(DEFAULT_BANDS)
    lay = FrameLayout("SimEEG", ("Fz",), np.array([0.0, 1.0]), bands=bands)
    f = SpectrumFrame(
        lay, 0, TS, TS, np.zeros((1, 2), np.float32),
        band_db=np.ones((5, 1), np.float32), band_rel=np.ones((5, 1), np.float32),
        quality=ChannelQuality(np.zeros(1, np.int8), np.zeros(1, np.uint8), np.ones((5, 1), np.float32)),
    )
    written = {m: (m, tags, fields) for m, tags, fields, _ in parse(lp.DerivedEncoder().encode_many([f]).body)}
    assert set(documented) == set(written) == {"eeg_bands", "eeg_quality"}
    for name, (_, tags, fields, _) in documented.items():
        assert tags == written[name][1]
        assert [k for k, _ in fields] == [k for k, _ in written[name][2]]
        assert [v.endswith("i") for _, v in fields] == [v.endswith("i") for _, v in written[name][2]]
        assert [len(v.partition(".")[2]) for _, v in fields] == [len(v.partition(".")[2]) for _, v in written[name][2]]


def test_a_reused_table_template_forgets_the_cells_left_out_before() -> None:
    rng = np.random.default_rng(9)
    first = derived_frame(np.ones((5, 2)), np.ones((2, 2)), np.ones((2, 2)))
    frames = []
    for i in range(8):
        q = rng.normal(0, 1e3, (5, 2))
        q[rng.integers(5, size=i % 3), rng.integers(2, size=i % 3)] = np.nan  # 0, 1 or 2 holes
        f = derived_frame(q, rng.normal(0, 50, (2, 2)), rng.uniform(0, 1, (2, 2)))
        frames.append(SpectrumFrame(first.layout, i, TS + i, TS, f.power_db, band_db=f.band_db, band_rel=f.band_rel, quality=f.quality))
    reused = lp.DerivedEncoder()
    bodies = [reused.encode_many([f]).body for f in frames]  # one layout: one template, reused
    assert bodies == [lp.DerivedEncoder().encode_many([f]).body for f in frames]
    for f, body in zip(frames, bodies):
        quality_lines = [line for line in parse(body) if line[0] == "eeg_quality"]
        for (_, _, fields, _), c in zip(quality_lines, range(2)):
            values = f.quality.values[:, c]  # type: ignore[union-attr]
            expected = [n for n, v in zip(("std", "dc_offset", "rail_fraction", "line_noise_db", "hf_ratio_db"), values) if np.isfinite(v)]
            assert [k for k, _ in fields] == expected + ["state", "flags"]
