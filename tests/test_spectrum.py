"""The STFT engine against scipy.signal.spectrogram on the same samples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from bridge.dsp.spectrum import EPS, PrecomputedEngine, StftEngine, StftParams

T0 = 1_700_000_000.0


def reference_db(x: np.ndarray, fs: float, p: StftParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent computation: scipy on the whole record, channels first."""
    f, t, power = scipy.signal.spectrogram(
        x.T, fs, window=p.window, nperseg=p.nperseg, noverlap=p.noverlap, scaling="density", mode="psd"
    )
    return f, t, power


def feed(engine: StftEngine, x: np.ndarray, times: np.ndarray, rng: np.random.Generator, max_chunk: int) -> list:
    frames = []
    i = 0
    while i < x.shape[0]:
        k = int(rng.integers(1, max_chunk + 1))
        frames += engine.push(x[i : i + k], times[i : i + k])
        i += k
    return frames


def assert_db_close(ours: np.ndarray, power: np.ndarray) -> None:
    """|ours - scipy| <= 1e-6 dB plus the float32 rounding of the stored value.

    Bins where scipy's power is at the numerical noise floor (< 1e-20, e.g. the DC bin of a
    detrended boxcar window, which is zero up to rounding) are excluded: their dB value is the
    logarithm of rounding noise in either implementation.
    """
    expected = 10 * np.log10(power + EPS)
    meaningful = power > 1e-20
    tolerance = 1e-6 + np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64) / 2
    error = np.abs(ours.astype(np.float64) - expected)
    assert meaningful.mean() > 0.9
    assert np.all(error[meaningful] <= tolerance[meaningful]), error[meaningful].max()


@pytest.mark.parametrize(
    "params,fs",
    [
        (StftParams(256, 128, "hann"), 500.0),
        (StftParams(128, 96, "hamming"), 250.0),
        (StftParams(255, 100, "blackman"), 1000.0),
        (StftParams(64, 0, "boxcar"), 128.0),
        (StftParams(512, 480, ("tukey", 0.25)), 1000.0),  # type: ignore[arg-type]
    ],
)
def test_matches_scipy_for_any_chunking(params: StftParams, fs: float) -> None:
    rng = np.random.default_rng(7)
    n, channels = 6000, 5
    t = np.arange(n) / fs
    x = rng.standard_normal((n, channels)) * 20 + 5  # offset: detrend must remove it
    x[:, 0] += 40 * np.sin(2 * np.pi * 10 * t)
    engine = StftEngine(stream="s", channels=[f"c{i}" for i in range(channels)], srate=fs, params=params, max_chunk=300)
    frames = feed(engine, x, T0 + t, rng, 300)
    f, tt, power = reference_db(x, fs, params)
    assert len(frames) == tt.size
    assert np.allclose(engine.layout.frequencies, f)
    assert_db_close(np.stack([fr.power_db for fr in frames], axis=-1), power)
    # window-centre timestamps, exactly scipy's t axis
    got = np.array([fr.time_ns for fr in frames], dtype=np.int64)
    assert np.all(np.abs(got - np.rint((T0 + tt) * 1e9).astype(np.int64)) <= 1000)
    assert [fr.seq for fr in frames] == list(range(len(frames)))


def test_integer_samples_match_float_reference() -> None:
    rng = np.random.default_rng(3)
    fs = 250.0
    x = rng.integers(-2000, 2000, size=(3000, 3)).astype(np.int16)
    params = StftParams(256, 192, "hann")
    engine = StftEngine(stream="s", channels=["a", "b", "c"], srate=fs, params=params)
    frames = feed(engine, x, T0 + np.arange(3000) / fs, rng, 500)
    _, _, power = reference_db(x.astype(np.float64), fs, params)
    assert_db_close(np.stack([fr.power_db for fr in frames], axis=-1), power)


def test_frequency_crop_keeps_exact_bins() -> None:
    fs = 500.0
    params = StftParams(250, 125, "hann", fmin=1.0, fmax=40.0)
    engine = StftEngine(stream="s", channels=["a"], srate=fs, params=params)
    assert engine.layout.frequencies[0] == 2.0  # bins are 2 Hz apart: 0 is below fmin
    assert engine.layout.frequencies[-1] == 40.0
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 1))
    frames = engine.push(x, T0 + np.arange(2000) / fs)
    f, _, power = reference_db(x, fs, params)
    keep = (f >= 1.0) & (f <= 40.0)
    assert_db_close(np.stack([fr.power_db for fr in frames], axis=-1), power[:, keep, :])


def test_no_bin_in_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="no frequency bin"):
        StftEngine(stream="s", channels=["a"], srate=100.0, params=StftParams(16, 8, "hann", fmin=20.0, fmax=21.0))


def test_long_run_frame_count_and_cadence_are_exact() -> None:
    fs, params = 1000.0, StftParams(256, 224, "hann")  # hop 32
    seconds = 600
    n = int(seconds * fs)
    engine = StftEngine(stream="s", channels=["a", "b"], srate=fs, params=params, max_chunk=1000)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, 2)).astype(np.float32)
    times = T0 + np.arange(n) / fs
    frames = feed(engine, x, times, rng, 1000)
    assert len(frames) == (n - params.nperseg) // params.hop + 1
    steps = np.diff([fr.time_ns for fr in frames])
    assert np.all(np.abs(steps - 32_000_000) <= 1000)  # 32 ms, to float64 timestamp precision
    # no window skipped or repeated: the last frame covers the last complete window
    assert frames[-1].newest_sample_ns == int(np.rint(times[(len(frames) - 1) * 32 + 255] * 1e9))


def test_reset_starts_a_fresh_window() -> None:
    fs, params = 100.0, StftParams(20, 10, "hann")
    engine = StftEngine(stream="s", channels=["a"], srate=fs, params=params)
    x = np.random.default_rng(0).standard_normal((30, 1))
    assert len(engine.push(x[:15], T0 + np.arange(15) / fs)) == 0
    engine.reset()
    assert engine.samples_needed() == 20
    frames = engine.push(x[:30], T0 + 10 + np.arange(30) / fs)
    assert len(frames) == 2
    _, _, power = reference_db(x[:30], fs, params)
    assert_db_close(np.stack([fr.power_db for fr in frames], axis=-1), power)


def test_precomputed_flat_layout_db_and_power() -> None:
    freqs = np.array([1.0, 2.0, 4.0, 8.0])
    samples = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 12) + 1.0  # 2 samples, 3 channels x 4 bins
    times = np.array([T0, T0 + 0.25])
    engine = PrecomputedEngine(stream="fft", channels=["a", "b", "c"], frequencies=freqs, scale="db")
    frames = engine.push(samples, times)
    assert [fr.time_ns for fr in frames] == [int(T0 * 1e9), int((T0 + 0.25) * 1e9)]
    assert np.array_equal(frames[1].power_db, samples[1].reshape(3, 4).astype(np.float32))
    power_engine = PrecomputedEngine(
        stream="fft", channels=["a", "b", "c"], frequencies=freqs, scale="power", fmin=2.0, fmax=4.0
    )
    cropped = power_engine.push(samples, times)
    assert np.allclose(cropped[0].power_db, 10 * np.log10(samples[0].reshape(3, 4)[:, 1:3] + EPS), atol=1e-5)
    assert list(power_engine.layout.frequencies) == [2.0, 4.0]


@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", "nuttall", "blackmanharris", "flattop", "boxcar", "bartlett", "rect", "han"])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 255, 256, 1024])
def test_windows_are_bit_identical_to_scipy(name: str, n: int) -> None:
    from bridge.dsp.windows import get_window

    assert np.array_equal(get_window(name, n), scipy.signal.get_window(name, n))


def test_unusual_windows_come_from_scipy_and_unknown_ones_are_refused() -> None:
    from bridge.dsp.windows import get_window

    assert np.array_equal(get_window("cosine", 33), scipy.signal.get_window("cosine", 33))
    with pytest.raises(ValueError, match="'hannn' is not a window"):
        get_window("hannn", 16)


def test_dc_coupled_offsets_do_not_disturb_the_spectrum() -> None:
    """DC-coupled amplifiers ride on offsets of tens of mV (float32 samples from LSL): the
    detrend must remove them exactly as scipy does, not by a rearrangement that loses bits."""
    from bridge.sources.simulator import EegSignal, SimulatorSettings

    rng = np.random.default_rng(17)
    fs, n, channels = 1000.0, 4000, 16
    offsets = rng.uniform(-50_000, 50_000, channels).astype(np.float32)  # µV
    eeg = EegSignal(SimulatorSettings(channels=channels, rate=fs, seed=17)).block(n)  # 1/f: tiny high bins
    x = (eeg + offsets).astype(np.float32)
    for params in (StftParams(256, 224, "hann"), StftParams(256, 128, "hamming")):
        engine = StftEngine(stream="s", channels=[f"c{i}" for i in range(channels)], srate=fs, params=params)
        frames = feed(engine, x, T0 + np.arange(n) / fs, rng, 200)
        _, _, power = reference_db(x.astype(np.float64), fs, params)
        assert_db_close(np.stack([fr.power_db for fr in frames], axis=-1), power)
