"""Per-channel signal quality, judged on the very window each frame's spectrum comes from.

Numbers (rows of ``ChannelQuality.values``, ``QUALITY_FIELDS``), all per channel and window:

* ``std``: standard deviation of the window's samples (population, ``ddof=0``), stream units.
* ``dc_offset``: the window's mean (the constant the STFT's detrend removes), stream units.
* ``rail_fraction``: fraction of the window's samples at or beyond the stream's limits: the
  integer type's range for int8/16/32/64 streams, ``+-QUALITY_RAIL`` for float streams (NaN for
  float streams without it).
* ``line_noise_db``: mean PSD within ``h = max(1 Hz, 2 df)`` of ``LINE_FREQ`` over the mean PSD
  of its neighbourhood ``h < |f - LINE_FREQ| <= h + max(5 Hz, 5 df)``, in dB (NaN when either
  range holds no bin). ``2 df`` is the Hann main lobe: a pure line sits wholly inside ``h``.
  White noise reads about 0 dB, scattering by several dB from window to window.
* ``hf_ratio_db``: mean PSD above the highest band edge (leaving out ``h`` around every
  harmonic of ``LINE_FREQ``) over mean PSD within the union of the bands, in dB (NaN with no
  bands or no bin above them). White noise reads about 0 dB, EEG
  with its 1/f fall-off well below; muscle noise (EMG, 20-300 Hz) lifts it.

The time-domain numbers (``std``, ``dc_offset``, ``rail_fraction``) are NaN on a precomputed
stream, which has no samples. A NaN number never fails a check.

Checks and states (0 good, 1 warn, 2 bad); a channel's state is its worst check, its flags
the checks at warn or worse (``QUALITY_FLAGS``):

* flat: ``std < QUALITY_FLAT_STD`` -> bad (a constant window has ``std == 0``);
* railed: ``rail_fraction >= QUALITY_RAIL_FRACTION`` (warn, bad), or
  ``|dc_offset| >= QUALITY_DC_OFFSET`` -> warn;
* line_noise: ``line_noise_db >= QUALITY_LINE_NOISE_DB`` (warn, bad);
* hf_noise: ``hf_ratio_db >= QUALITY_HF_RATIO_DB`` (warn, bad).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.frame import QUALITY_FLAGS, QUALITY_FIELDS, ChannelQuality

GOOD, WARN, BAD = 0, 1, 2
_ROW = {name: i for i, name in enumerate(QUALITY_FIELDS)}
#: Spectral columns the engine's one matrix product adds after the bands (mean densities).
SPECTRAL_COLUMNS = ("line", "line_neighbourhood", "above_bands")

_INT_LIMITS = {name: (float(np.iinfo(name).min), float(np.iinfo(name).max)) for name in ("int8", "int16", "int32", "int64")}


@dataclass(frozen=True)
class QualitySettings:
    line_freq: float = 50.0
    flat_std: float = 0.5
    rail: float | None = None
    rail_fraction: tuple[float, float] = (0.001, 0.05)
    dc_offset: float | None = None
    line_noise_db: tuple[float, float] = (15.0, 25.0)
    hf_ratio_db: tuple[float, float] = (6.0, 12.0)


def parse_thresholds(text: str, name: str) -> tuple[float, float]:
    """``'warn,bad'`` -> (warn, bad) with ``warn <= bad``; ValueError with one sentence."""
    try:
        warn, bad = (float(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"{name} must be two numbers 'warn,bad', like '10,20'") from None
    if not (np.isfinite(warn) and np.isfinite(bad)) or warn > bad:
        raise ValueError(f"{name} needs finite numbers with warn <= bad")
    return warn, bad


def rails_for(channel_format: str, settings: QualitySettings) -> tuple[float, float] | None:
    """The values a saturated amplifier sits at: the integer type's limits, or ``+-QUALITY_RAIL``."""
    if channel_format in _INT_LIMITS:
        return _INT_LIMITS[channel_format]
    if settings.rail is not None:
        return -settings.rail, settings.rail
    return None


def spectral_weights(
    frequencies: np.ndarray, widths: np.ndarray, union: np.ndarray, top_edge: float | None, line_freq: float
) -> np.ndarray:
    """(bins x 3) weights whose product with power gives the mean PSD of each SPECTRAL_COLUMNS range.

    A range without any bin gets an all-zero column and is reported NaN (see ``judge``).
    """
    freqs = np.asarray(frequencies, dtype=np.float64)
    df = float(np.median(widths))
    half = max(1.0, 2.0 * df)
    distance = np.abs(freqs - line_freq)
    # every harmonic's line window is left out of the high-frequency range: mains is the line
    # check's to report, and would otherwise also read as muscle noise
    harmonic = np.abs(freqs - line_freq * np.maximum(1.0, np.round(freqs / line_freq)))
    above = freqs >= top_edge if top_edge is not None else np.zeros(freqs.size, bool)
    ranges = [
        distance <= half,
        (distance > half) & (distance <= half + max(5.0, 5.0 * df)),
        above & (harmonic > half),
    ]
    columns = np.zeros((freqs.size, len(ranges)))
    for j, mask in enumerate(ranges):
        if mask.any() and (j < 2 or union.any()):
            columns[mask, j] = widths[mask] / widths[mask].sum()
    return columns


def _ratio_db(num: np.ndarray, den: np.ndarray, known: bool) -> np.ndarray:
    if not known:
        return np.full(num.shape, np.nan)
    return 10.0 * np.log10((num + 1e-30) / (den + 1e-30))


def judge(
    settings: QualitySettings,
    *,
    std: np.ndarray,
    dc_offset: np.ndarray,
    rail_fraction: np.ndarray,
    spectral: np.ndarray,
    known: np.ndarray,
    union_density: np.ndarray,
) -> list[ChannelQuality]:
    """Numbers and states for ``w`` windows of ``c`` channels at once.

    ``std``/``dc_offset``/``rail_fraction`` are (c, w); ``spectral`` is (c, w, 3): the mean
    densities of SPECTRAL_COLUMNS; ``known`` says which of those columns has bins;
    ``union_density`` (c, w) is the mean PSD within the bands.
    """
    channels, windows = std.shape
    values = np.empty((windows, len(QUALITY_FIELDS), channels), dtype=np.float64)
    values[:, _ROW["std"]] = std.T
    values[:, _ROW["dc_offset"]] = dc_offset.T
    values[:, _ROW["rail_fraction"]] = rail_fraction.T
    with np.errstate(invalid="ignore", divide="ignore"):
        values[:, _ROW["line_noise_db"]] = _ratio_db(spectral[..., 0], spectral[..., 1], bool(known[0] and known[1])).T
        values[:, _ROW["hf_ratio_db"]] = _ratio_db(spectral[..., 2], union_density, bool(known[2])).T
        state = np.zeros((windows, channels), dtype=np.int8)
        flags = np.zeros((windows, channels), dtype=np.uint8)

        def check(level: np.ndarray, flag: str) -> None:
            np.maximum(state, level, out=state)
            flags[level > GOOD] |= QUALITY_FLAGS[flag]

        def graded(row: str, thresholds: tuple[float, float]) -> np.ndarray:
            x = values[:, _ROW[row]]
            return (x >= thresholds[0]).astype(np.int8) + (x >= thresholds[1]).astype(np.int8)

        check(np.where(values[:, _ROW["std"]] < settings.flat_std, BAD, GOOD).astype(np.int8), "flat")
        railed = graded("rail_fraction", settings.rail_fraction)
        if settings.dc_offset is not None:
            np.maximum(railed, (np.abs(values[:, _ROW["dc_offset"]]) >= settings.dc_offset).astype(np.int8), out=railed)
        check(railed, "railed")
        check(graded("line_noise_db", settings.line_noise_db), "line_noise")
        check(graded("hf_ratio_db", settings.hf_ratio_db), "hf_noise")
    values32 = values.astype(np.float32)
    return [ChannelQuality(state=state[k], flags=flags[k], values=values32[k]) for k in range(windows)]


def rail_fractions(windows: np.ndarray, rails: tuple[float, float] | None) -> np.ndarray:
    """Fraction of each (channel, window) row's samples at or beyond the rails; NaN without rails.

    Two reductions find the few rows touching a rail; only those are counted sample by sample,
    so a healthy montage pays for a max and a min, not for a comparison matrix.
    """
    shape = windows.shape[:-1]
    if rails is None:
        return np.full(shape, np.nan)
    low, high = rails
    fractions = np.zeros(shape)
    hit = (windows.max(axis=-1) >= high) | (windows.min(axis=-1) <= low)
    if hit.any():
        rows = windows[hit]
        fractions[hit] = np.count_nonzero((rows >= high) | (rows <= low), axis=-1) / windows.shape[-1]
    return fractions
