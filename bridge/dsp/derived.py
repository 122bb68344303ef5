"""Band power and quality for a batch of windows, from one matrix product over the PSD.

Both engines hand their linear power here (``StftEngine`` before its dB conversion,
``PrecomputedEngine`` converting dB back), so ``run`` and ``import`` frames carry identical
products. The bands' integration weights and the quality checks' averaging weights are columns
of one (bins x columns) matrix: one ``(channels*windows x bins) @ (bins x columns)`` product
computes all of them, restricted to the bins any column uses.

Decimation (``DERIVED_EVERY_FRAMES``): products are computed for frames whose sequence number is
a multiple of ``every``; the frames in between carry ``None``. Sequence numbers keep counting
across reconnections, so the decimated frames are the same whichever way a stream is read.
Unset, ``every`` follows the frame rate: about ``AUTO_PER_SECOND`` products a second (every
frame up to that rate). Band power and quality are slow measures that nobody reads faster on a
heatmap or a badge, and at 256 ch x 2 kHz (15.6 frames/s) every frame would cost about a fifth
of the bridge's CPU (bench/results/derived.md) for no visible gain.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from bridge.dsp.bands import band_weights, fits, union_weights
from bridge.dsp.db import EPS
from bridge.dsp.quality import QualitySettings, judge, spectral_weights
from bridge.frame import Band, ChannelQuality

log = logging.getLogger(__name__)

Products = tuple[np.ndarray | None, np.ndarray | None, ChannelQuality | None]

#: With DERIVED_EVERY_FRAMES unset: products per second of signal, at most (every frame below it).
AUTO_PER_SECOND = 4.0


@dataclass(frozen=True)
class DerivedSettings:
    """What the engines add to frames: empty ``bands`` / ``quality=None`` / ``every=0`` turn parts off."""

    bands: tuple[Band, ...] = ()
    #: Products on every Nth frame; ``None`` = follow the frame rate (:meth:`for_frame_rate`).
    every: int | None = 1
    quality: QualitySettings | None = None
    #: True when the user chose the bands (SPECTRUM_BANDS set): a band that does not fit the
    #: stream's axis is then an error. The default bands are only kept where they fit, so a
    #: low-rate or narrow precomputed stream still runs with no configuration.
    strict: bool = True

    @property
    def active(self) -> bool:
        return self.every != 0 and (bool(self.bands) or self.quality is not None)

    def for_frame_rate(self, frames_per_second: float) -> DerivedSettings:
        """Settings with ``every`` fixed for a stream of this frame rate (0 = irregular: every frame)."""
        if self.every is not None:
            return self
        every = max(1, math.floor(frames_per_second / AUTO_PER_SECOND + 0.5)) if frames_per_second > 0 else 1
        return replace(self, every=every)


class Derived:
    """Per-layout weights, built once when the stream's axis is known."""

    def __init__(self, frequencies: np.ndarray, widths: np.ndarray, settings: DerivedSettings) -> None:
        self.settings = settings
        bands = settings.bands if settings.strict else tuple(b for b in settings.bands if fits(frequencies, widths, b))
        if len(bands) < len(settings.bands):
            log.warning(
                "default bands %s do not fit the frequency axis (%g-%g Hz) and are left out; set SPECTRUM_BANDS to choose",
                ", ".join(b.name for b in settings.bands if b not in bands), frequencies[0], frequencies[-1],
            )
        self.bands = bands
        weights = band_weights(frequencies, widths, bands)
        union = union_weights(weights)
        columns = [weights, union[:, None]]
        if settings.quality is not None:
            top = max(b.high_hz for b in bands) if bands else None
            spectral = spectral_weights(frequencies, widths, union, top, settings.quality.line_freq)
            self._known = spectral.any(axis=0)
            columns.append(spectral)
        matrix = np.hstack(columns)
        used = np.flatnonzero(matrix.any(axis=1))
        self.bins = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 1)
        self._matrix = np.ascontiguousarray(matrix[self.bins])
        self._union_width = float(union.sum())

    def selected(self, first_seq: int, count: int) -> np.ndarray:
        """Indices of the ``count`` windows starting at ``first_seq`` that get products."""
        every = self.settings.every or 1
        first = (-first_seq) % every
        return np.arange(first, count, every)

    def compute(
        self,
        power: np.ndarray,
        *,
        std: np.ndarray | None = None,
        dc_offset: np.ndarray | None = None,
        rail_fraction: np.ndarray | None = None,
    ) -> list[Products]:
        """``power`` (channels, windows, bins of the full axis) linear PSD -> products per window.

        Time-domain numbers are (channels, windows), or ``None`` on a precomputed stream (NaN).
        """
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # non-finite input: see sinks
            return self._compute(power, std, dc_offset, rail_fraction)

    def _compute(
        self, power: np.ndarray, std: np.ndarray | None, dc_offset: np.ndarray | None, rail_fraction: np.ndarray | None
    ) -> list[Products]:
        channels, windows = power.shape[:2]
        # as one 2-D product: a strided 3-D operand would miss BLAS and run ~10x slower
        used = np.ascontiguousarray(power[..., self.bins]).reshape(channels * windows, -1)
        sums = (used @ self._matrix).reshape(channels, windows, -1)  # (channels, windows, columns)
        n_bands = len(self.bands)
        band_db: list[np.ndarray | None] = [None] * windows
        band_rel: list[np.ndarray | None] = [None] * windows
        union = sums[..., n_bands]
        if n_bands:
            absolute = np.moveaxis(sums[..., :n_bands], 0, -1)  # (windows, bands, channels)
            rel = (absolute / (np.moveaxis(union, 0, -1)[:, None, :] + EPS)).astype(np.float32)
            db = (10.0 * np.log10(absolute + EPS)).astype(np.float32)
            band_db, band_rel = list(db), list(rel)
        quality: list[ChannelQuality | None] = [None] * windows
        if self.settings.quality is not None:
            unknown = np.full((channels, windows), np.nan)
            quality = list(
                judge(
                    self.settings.quality,
                    std=unknown if std is None else std,
                    dc_offset=unknown if dc_offset is None else dc_offset,
                    rail_fraction=unknown if rail_fraction is None else rail_fraction,
                    spectral=sums[..., n_bands + 1 :],
                    known=self._known,
                    union_density=union / self._union_width if self._union_width else unknown,
                )
            )
        return list(zip(band_db, band_rel, quality))
