"""Band power and channel quality on the engines, against closed forms and scipy.

Known content: a 10 Hz sine of amplitude A over white noise of variance s^2 (density
s^2 / (fs/2) one-sided). Band power by the rectangle rule is ``sum PSD_k * df`` over the band's
bins; the Hann-windowed sine's bins sum to its power A^2/2 (Parseval with the density scaling),
and all but a negligible sidelobe of it falls in 8-13 Hz, so
``P_alpha = A^2/2 + s^2/(fs/2) * n_alpha * df`` with ``n_alpha`` the bins in [8, 13).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from bridge.config import ConfigError, SpectrumSettings, build_settings, load_options
from bridge.dsp.bands import DEFAULT_BANDS, parse_bands
from bridge.dsp.derived import DerivedSettings
from bridge.dsp.quality import QualitySettings, rails_for
from bridge.dsp.spectrum import PrecomputedEngine, StftEngine, StftParams
from bridge.frame import QUALITY_FIELDS, QUALITY_FLAGS, SpectrumFrame
from bridge.pipeline import build_engine
from bridge.sources.lsl import StreamDescription, StreamRejected

FS = 250.0
NPERSEG, NOVERLAP = 256, 128
DF = FS / NPERSEG
A, SIGMA = 10.0, 2.0
BANDS = parse_bands(DEFAULT_BANDS)
ROW = {name: i for i, name in enumerate(QUALITY_FIELDS)}
RAIL = 60.0
SINE, LINE, FLAT, CLIPPED, GOOD1, GOOD2 = range(6)


def known_content(seconds: float = 40.0, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Channels: 10 Hz sine + noise, 50 Hz line + noise, constant, a clipped 3 Hz wave, two noise-only."""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    x = np.random.default_rng(seed).normal(0.0, SIGMA, (n, 6))
    x[:, SINE] += A * np.sin(2 * np.pi * 10.0 * t)
    x[:, LINE] += 20.0 * np.sin(2 * np.pi * 50.0 * t)
    x[:, FLAT] = 3.25
    x[:, CLIPPED] = np.clip(x[:, CLIPPED] + 100.0 * np.sin(2 * np.pi * 3.0 * t), -RAIL, RAIL)
    return x, 1.7e9 + t


def engine(derived: DerivedSettings | None = None, **params: float) -> StftEngine:
    return StftEngine(
        stream="s", channels=[f"c{i}" for i in range(6)], srate=FS,
        params=StftParams(NPERSEG, NOVERLAP, "hann", **params),  # type: ignore[arg-type]
        derived=derived or DerivedSettings(BANDS, 1, QualitySettings(rail=RAIL)), rails=(-RAIL, RAIL),
    )


def bins_in(low: float, high: float) -> int:
    f = np.fft.rfftfreq(NPERSEG, 1 / FS)
    return int(np.count_nonzero((f >= low) & (f < high)))


def mean_power_db(frames: list[SpectrumFrame], band: int, channel: int) -> float:
    linear = np.mean([10 ** (f.band_db[band, channel] / 10.0) for f in frames])  # type: ignore[index]
    return float(10 * np.log10(linear))


def test_alpha_of_a_known_sine_matches_the_closed_form_and_is_the_largest_band() -> None:
    x, t = known_content()
    frames = engine().push(x, t)
    assert len(frames) == (len(x) - NPERSEG) // (NPERSEG - NOVERLAP) + 1
    noise_density = SIGMA**2 / (FS / 2)
    expected = 10 * np.log10(A**2 / 2 + noise_density * bins_in(8, 13) * DF)
    alpha = [b.name for b in BANDS].index("alpha")
    assert abs(mean_power_db(frames, alpha, SINE) - expected) < 0.5
    for frame in frames:
        assert int(np.argmax(frame.band_db[:, SINE])) == alpha  # type: ignore[index]
    # a noise-only channel: each band holds density x its bins' width
    for j, band in enumerate(BANDS):
        if band.high_hz - band.low_hz >= 10:  # narrow bands have too few bins for a 0.5 dB mean
            closed = 10 * np.log10(noise_density * bins_in(band.low_hz, band.high_hz) * DF)
            assert abs(mean_power_db(frames, j, GOOD1) - closed) < 0.5, band


def test_band_power_equals_scipy_spectrogram_integrated_independently() -> None:
    x, t = known_content(seconds=12.0)
    # bands outside the stored crop are still computed from the whole axis
    frames = engine(fmin=20.0, fmax=40.0).push(x, t)
    f, _, sxx = scipy.signal.spectrogram(
        x.T, FS, window="hann", nperseg=NPERSEG, noverlap=NOVERLAP, scaling="density", mode="psd"
    )
    assert sxx.shape[-1] == len(frames)
    width = f[1] - f[0]
    masks = [(f >= b.low_hz) & (f < b.high_hz) for b in BANDS]
    power = np.stack([sxx[:, m, :].sum(axis=1) * width for m in masks])  # (bands, channels, frames)
    union = sxx[:, np.any(masks, axis=0), :].sum(axis=1) * width
    got_db = np.stack([fr.band_db for fr in frames], axis=-1)
    got_rel = np.stack([fr.band_rel for fr in frames], axis=-1)
    live = np.arange(6) != FLAT
    assert np.max(np.abs(got_db[:, live] - 10 * np.log10(power[:, live] + 1e-30))) < 1e-3
    assert np.max(np.abs(got_rel[:, live] - power[:, live] / union[live])) < 1e-5
    assert np.all(got_db[:, FLAT] == np.float32(-300.0)) and np.all(got_rel[:, FLAT] == 0.0)
    assert frames[0].layout.bands == BANDS and frames[0].band_db.dtype == np.float32  # type: ignore[union-attr]


def test_quality_flags_flat_line_rail_and_leaves_good_channels_good() -> None:
    x, t = known_content()
    frames = engine().push(x, t)
    states = np.array([f.quality.state for f in frames])  # type: ignore[union-attr]
    flags = np.array([f.quality.flags for f in frames])  # type: ignore[union-attr]
    values = np.array([f.quality.values for f in frames])  # type: ignore[union-attr]
    assert np.all(states[:, [SINE, GOOD1, GOOD2]] == 0) and np.all(flags[:, [SINE, GOOD1, GOOD2]] == 0)
    assert np.all(flags[:, LINE] == QUALITY_FLAGS["line_noise"]) and np.all(states[:, LINE] == 2)
    assert np.all(flags[:, FLAT] & QUALITY_FLAGS["flat"]) and np.all(states[:, FLAT] == 2)
    assert np.all(flags[:, CLIPPED] & QUALITY_FLAGS["railed"]) and np.all(states[:, CLIPPED] == 2)
    # the numbers behind the states, against direct computations on each frame's window
    hop = NPERSEG - NOVERLAP
    windows = np.stack([x[k * hop : k * hop + NPERSEG] for k in range(len(frames))])  # (frames, n, ch)
    assert np.allclose(values[:, ROW["std"]], windows.std(axis=1), rtol=1e-5, atol=1e-6)
    assert np.allclose(values[:, ROW["dc_offset"]], windows.mean(axis=1), rtol=1e-5, atol=1e-5)
    assert np.allclose(values[:, ROW["rail_fraction"]], (np.abs(windows) >= RAIL).mean(axis=1), atol=1e-7)
    assert values[:, ROW["line_noise_db"], LINE].min() > 25
    assert values[:, ROW["std"], FLAT].max() == 0.0


def test_integer_streams_rail_at_their_type_limits() -> None:
    assert rails_for("int16", QualitySettings()) == (-32768.0, 32767.0)
    assert rails_for("float32", QualitySettings()) is None
    n = NPERSEG * 4
    x = np.random.default_rng(1).integers(-2000, 2000, (n, 2)).astype(np.int16)
    x[::10, 1] = 32767
    eng = StftEngine(stream="s", channels=["a", "b"], srate=FS, params=StftParams(NPERSEG, NOVERLAP),
                     derived=DerivedSettings(BANDS, 1, QualitySettings()), rails=rails_for("int16", QualitySettings()))
    frames = eng.push(x, np.arange(n) / FS)
    fractions = np.array([f.quality.values[ROW["rail_fraction"]] for f in frames])  # type: ignore[union-attr]
    assert np.all(fractions[:, 0] == 0.0)
    assert np.allclose(fractions[:, 1], np.ceil(NPERSEG / 10) / NPERSEG, atol=1 / NPERSEG)
    # a float stream without QUALITY_RAIL has no rails: unknown, and no flag from it
    plain = engine(DerivedSettings(BANDS, 1, QualitySettings()))
    plain._rails = None
    frame = plain.push(*known_content(seconds=2.0))[0]
    assert np.all(np.isnan(frame.quality.values[ROW["rail_fraction"]]))  # type: ignore[union-attr]


def test_decimation_leaves_products_on_every_nth_frame_only() -> None:
    x, t = known_content(seconds=6.0)
    eng = engine(DerivedSettings(BANDS, 3, QualitySettings(rail=RAIL)))
    frames = eng.push(x[:700], t[:700]) + eng.push(x[700:], t[700:])  # windows split over pushes
    full = engine().push(x, t)
    assert len(frames) == len(full) > 6
    for frame, reference in zip(frames, full):
        if frame.seq % 3:
            assert frame.band_db is None and frame.band_rel is None and frame.quality is None
        else:
            assert np.array_equal(frame.band_db, reference.band_db)  # type: ignore[arg-type]
            assert np.array_equal(frame.quality.state, reference.quality.state)  # type: ignore[union-attr]
        assert np.array_equal(frame.power_db, reference.power_db)


def test_off_means_none_and_identical_spectra() -> None:
    x, t = known_content(seconds=3.0)
    off = StftEngine(stream="s", channels=[f"c{i}" for i in range(6)], srate=FS, params=StftParams(NPERSEG, NOVERLAP))
    on = engine()
    for a, b in zip(off.push(x, t), on.push(x, t)):
        assert a.band_db is None and a.quality is None and b.band_db is not None
        assert np.array_equal(a.power_db, b.power_db)


def test_precomputed_stream_gets_the_same_bands_and_spectral_quality() -> None:
    x, t = known_content(seconds=4.0)
    stft = engine().push(x, t)
    freqs = stft[0].layout.frequencies
    flat = np.stack([f.power_db.ravel() for f in stft])  # one sample per frame, channel-major
    pre = PrecomputedEngine(stream="s", channels=[f"c{i}" for i in range(6)], frequencies=freqs, scale="db",
                            derived=DerivedSettings(BANDS, 1, QualitySettings(rail=RAIL)))
    frames = pre.push(flat, t[: len(stft)])
    live = np.arange(6) != FLAT
    for a, b in zip(stft, frames):
        assert np.max(np.abs(a.band_db[:, live] - b.band_db[:, live])) < 2e-3  # type: ignore[index]
        spectral = [ROW["line_noise_db"], ROW["hf_ratio_db"]]
        assert np.allclose(a.quality.values[spectral][:, live], b.quality.values[spectral][:, live], atol=2e-3)  # type: ignore[union-attr]
        assert np.all(np.isnan(b.quality.values[[ROW["std"], ROW["dc_offset"], ROW["rail_fraction"]]]))  # type: ignore[union-attr]
    assert [f.quality.state[LINE] for f in frames] == [2] * len(frames)  # type: ignore[union-attr]


def description(srate: float, frequencies: np.ndarray | None = None, channels: int = 2) -> StreamDescription:
    return StreamDescription(name="s", type="EEG", source_id="", hostname="h", uid="u", channel_count=channels,
                             srate=srate, channel_format="float32", labels=("a", "b")[:channels], frequencies=frequencies)


def settings(env: dict[str, str]) -> SpectrumSettings:
    return build_settings(load_options({"LSL_STREAM_NAME": "x", **env}), check_hosts=False).spectrum


def test_a_chosen_band_outside_the_axis_is_refused_with_one_sentence() -> None:
    with pytest.raises(StreamRejected, match=r"band gamma \(30-45 Hz\) is outside the frequency axis .*0 to 40 Hz") as info:
        build_engine(description(80.0), settings({"SPECTRUM_BANDS": "alpha:8-13,gamma:30-45", "SPECTRUM_NPERSEG": "64", "SPECTRUM_NOVERLAP": "32"}))
    assert "\n" not in str(info.value)
    with pytest.raises(StreamRejected, match="band narrow .* holds no bin"):
        build_engine(description(250.0), settings({"SPECTRUM_BANDS": "narrow:10.1-10.2"}))


def test_default_bands_that_do_not_fit_are_left_out() -> None:
    engine_, _ = build_engine(description(80.0), settings({"SPECTRUM_NPERSEG": "64", "SPECTRUM_NOVERLAP": "32"}))
    assert [b.name for b in engine_.layout.bands] == ["delta", "theta", "alpha", "beta"]
    pre, _ = build_engine(description(0.0, np.array([4.0, 8.0, 12.0, 16.0]), channels=4), settings({"SPECTRUM_MODE": "precomputed"}))
    assert [b.name for b in pre.layout.bands] == ["theta", "alpha"]  # 4-8 and 8-13 fit 4..16 (+4) Hz


@pytest.mark.parametrize(
    "env,sentence",
    [
        ({"SPECTRUM_BANDS": "alpha:13-8"}, "band 'alpha:13-8' needs 0 <= low < high"),
        ({"SPECTRUM_BANDS": "alpha 8-13"}, "'alpha 8-13' is not name:low-high in Hz"),
        ({"SPECTRUM_BANDS": "alpha:8-13,alpha:9-10"}, "band name 'alpha' is used twice"),
        ({"SPECTRUM_BANDS": "a:1-2,a_rel:2-3"}, "clashes with the relative power field"),
        ({"SPECTRUM_BANDS": "1st:1-2"}, "must start with a letter"),
        ({"LINE_FREQ": "55"}, "Invalid LINE_FREQ"),
        ({"QUALITY_LINE_NOISE_DB": "20,10"}, "warn <= bad"),
        ({"DERIVED_EVERY_FRAMES": "-1"}, "Invalid DERIVED_EVERY_FRAMES"),
    ],
)
def test_bad_band_and_quality_options_give_one_sentence(env: dict[str, str], sentence: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        settings(env)
    assert sentence in str(info.value) and "\n" not in str(info.value)


def test_empty_bands_or_zero_every_turn_products_off() -> None:
    assert settings({"SPECTRUM_BANDS": ""}).derived.bands == ()
    assert not settings({"DERIVED_EVERY_FRAMES": "0"}).derived.active
    assert settings({"QUALITY_ENABLED": "false", "SPECTRUM_BANDS": ""}).derived.active is False


@pytest.mark.parametrize(
    "rate,nperseg,noverlap,every",
    [(500.0, 256, 128, 1), (1000.0, 256, 128, 2), (2000.0, 256, 128, 4), (1000.0, 256, 224, 8), (128.0, 256, 0, 1)],
)
def test_default_decimation_follows_the_frame_rate(rate: float, nperseg: int, noverlap: int, every: int) -> None:
    """Unset, about 4 products a second: round(rate / hop / 4), at least every frame."""
    derived = settings({"SPECTRUM_NPERSEG": str(nperseg), "SPECTRUM_NOVERLAP": str(noverlap)}).derived
    assert derived.every is None
    assert derived.for_frame_rate(rate / (nperseg - noverlap)).every == every
    assert derived.for_frame_rate(0.0).every == 1  # an irregular stream: every frame
    assert settings({"DERIVED_EVERY_FRAMES": "3"}).derived.for_frame_rate(1000.0).every == 3


def test_the_engine_decimates_by_the_streams_frame_rate() -> None:
    """build_engine (run and import alike) applies the default to the stream's own rate."""
    description = StreamDescription(
        name="s", type="EEG", source_id="", hostname="h", uid="u", channel_count=2, srate=2000.0,
        channel_format="float32", labels=("a", "b"),
    )
    engine, _ = build_engine(description, settings({}))
    fs = 2000.0
    t = np.arange(256 + 128 * 11) / fs
    frames = engine.push(np.random.default_rng(0).standard_normal((t.size, 2)), 1.7e9 + t)
    assert len(frames) == 12
    assert [f.seq for f in frames if f.band_db is not None] == [0, 4, 8]
