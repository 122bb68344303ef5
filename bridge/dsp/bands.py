"""Band power per channel, integrated from the same PSD the spectra are made of.

The rule (docs/data-model.md, "eeg_bands"):

* A band ``low-high`` holds every bin whose centre frequency ``f_k`` satisfies
  ``low <= f_k < high`` (low inclusive, high exclusive, so adjacent bands never share a bin).
* Absolute band power is the rectangle rule over those bins, ``P = sum_k PSD_k * df_k``, with
  ``df_k`` the bin width: ``fs / nperseg`` on a sliding-STFT axis (every bin equally wide), and
  ``(f_{k+1} - f_{k-1}) / 2`` (one-sided difference at the two ends) on a precomputed axis. For
  a µV stream ``P`` is in µV²; it is reported as ``10*log10(P + EPS)`` dB like the spectra.
* Relative band power is ``P_band / P_union``, where ``P_union`` integrates the union of the
  bands, every bin once even where bands overlap; ``0`` for a channel carrying no power.

Everything is computed from linear power (never from the rounded dB frame) and from the whole
frequency axis of the analysis, before ``SPECTRUM_FMIN``/``SPECTRUM_FMAX`` crop what is stored:
the crop decides what the spectra archive holds, not what a band means.
"""

from __future__ import annotations

import re

import numpy as np

from bridge.frame import Band

DEFAULT_BANDS = "delta:1-4,theta:4-8,alpha:8-13,beta:13-30,gamma:30-45"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


class BandOutsideAxis(ValueError):
    """A configured band cannot be measured on the stream's frequency axis."""


def parse_bands(text: str) -> tuple[Band, ...]:
    """``name:low-high,...`` -> bands; ValueError with one sentence naming the bad item.

    Names become InfluxDB field keys (``alpha``, ``alpha_rel``) and Grafana Live measurements
    (``band_alpha``), so they are restricted to letters, digits and ``_``.
    """
    bands: list[Band] = []
    for item in (part.strip() for part in text.split(",")):
        name, _, edges = item.partition(":")
        low_text, _, high_text = edges.partition("-")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            raise ValueError(f"'{item}' is not name:low-high in Hz (like alpha:8-13)") from None
        if not _NAME.match(name.strip()):
            raise ValueError(f"band name '{name.strip()}' must start with a letter and use only letters, digits and _ (at most 32)")
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high <= low:
            raise ValueError(f"band '{item}' needs 0 <= low < high")
        bands.append(Band(name.strip(), low, high))
    names = [b.name for b in bands]
    for band in bands:
        if names.count(band.name) > 1:
            raise ValueError(f"band name '{band.name}' is used twice")
        if f"{band.name}_rel" in names:
            raise ValueError(f"band name '{band.name}_rel' clashes with the relative power field of band '{band.name}'")
    return tuple(bands)


def bin_widths(frequencies: np.ndarray, uniform: float | None = None) -> np.ndarray:
    """Width ``df_k`` of every bin: ``uniform`` when given (STFT: fs/nperseg), else centred differences."""
    freqs = np.asarray(frequencies, dtype=np.float64)
    if uniform is not None:
        return np.full(freqs.size, float(uniform))
    if freqs.size == 1:
        return np.ones(1)
    return np.gradient(freqs)


def fits(frequencies: np.ndarray, widths: np.ndarray, band: Band) -> bool:
    """True when ``band`` lies within the axis and holds at least one bin of it."""
    freqs = np.asarray(frequencies, dtype=np.float64)
    inside = (freqs >= band.low_hz) & (freqs < band.high_hz)
    return bool(band.low_hz >= freqs[0] and band.high_hz <= freqs[-1] + widths[-1] and inside.any())


def band_weights(frequencies: np.ndarray, widths: np.ndarray, bands: tuple[Band, ...]) -> np.ndarray:
    """(bins x bands) matrix: ``power @ W`` integrates every band at once (rectangle rule).

    A band reaching beyond the axis (below its first bin, or above its last bin plus that bin's
    width) or holding no bin is refused with one sentence: a silently truncated band would be
    stored under the same name as the full one.
    """
    freqs = np.asarray(frequencies, dtype=np.float64)
    weights = np.zeros((freqs.size, len(bands)))
    for j, band in enumerate(bands):
        inside = (freqs >= band.low_hz) & (freqs < band.high_hz)
        if not fits(freqs, widths, band):
            raise BandOutsideAxis(
                f"band {band.name} ({band.low_hz:g}-{band.high_hz:g} Hz) is outside the frequency axis of the spectra "
                f"({freqs[0]:g} to {freqs[-1]:g} Hz in steps of {widths[-1]:g} Hz) or holds no bin of it: "
                "change SPECTRUM_BANDS (or the stream's rate / SPECTRUM_NPERSEG)."
            )
        weights[inside, j] = widths[inside]
    return weights


def union_weights(weights: np.ndarray) -> np.ndarray:
    """Integration weights of the union of the bands: every bin once, even where bands overlap."""
    return weights.max(axis=1) if weights.size else np.zeros(weights.shape[0])
