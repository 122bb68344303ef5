"""Samples in, spectrum frames out.

Two engines share one interface (``push(samples, times) -> list[SpectrumFrame]`` and ``reset()``):

* :class:`StftEngine` computes a sliding STFT exactly like ``scipy.signal.spectrogram`` with
  ``scaling='density', mode='psd'`` (constant detrend, one-sided, doubled non-edge bins), but
  incrementally: samples go into a preallocated buffer and every complete window is transformed
  in one batched FFT, so the per-hop cost is a fraction of calling ``spectrogram`` per hop.
* :class:`PrecomputedEngine` takes streams whose samples already are spectra.

Times are Unix seconds (float64) per sample, already converted by the source. A frame's time is
the centre of its window (``scipy``'s ``t`` convention), see docs/data-model.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import numpy as np

from bridge.frame import FrameLayout, SpectrumFrame
from bridge.dsp.bands import bin_widths
from bridge.dsp.db import EPS, to_db
from bridge.dsp.derived import Derived, DerivedSettings, Products
from bridge.dsp.quality import rail_fractions
from bridge.dsp.windows import get_window

__all__ = ["EPS", "PrecomputedEngine", "SpectrumEngine", "StftEngine", "StftParams", "to_db"]


class SpectrumEngine(Protocol):
    layout: FrameLayout

    def push(self, samples: np.ndarray, times: np.ndarray) -> list[SpectrumFrame]: ...

    def reset(self) -> None: ...

    def samples_needed(self) -> int:
        """Samples still missing for the next frame: how long the source may wait in C."""
        ...


@dataclass(frozen=True)
class StftParams:
    nperseg: int = 256
    noverlap: int = 128
    window: str = "hann"
    fmin: float | None = None
    fmax: float | None = None

    @property
    def hop(self) -> int:
        return self.nperseg - self.noverlap


def _frequency_crop(freqs: np.ndarray, fmin: float | None, fmax: float | None) -> slice:
    lo = 0 if fmin is None else int(np.searchsorted(freqs, fmin, side="left"))
    hi = freqs.size if fmax is None else int(np.searchsorted(freqs, fmax, side="right"))
    if hi <= lo:
        raise ValueError(
            f"no frequency bin lies between {fmin} and {fmax} Hz "
            f"(bins run from {freqs[0]:g} to {freqs[-1]:g} Hz)"
        )
    return slice(lo, hi)


class _FrameCounter:
    """Sequence numbers keep growing across resets and layouts, so sinks can spot gaps."""

    def __init__(self) -> None:
        self.next_seq = 0

    def take(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq


class StftEngine:
    def __init__(
        self,
        *,
        stream: str,
        channels: Sequence[str],
        srate: float,
        params: StftParams,
        max_chunk: int = 4096,
        derived: DerivedSettings | None = None,
        rails: tuple[float, float] | None = None,
        key: str = "",
    ) -> None:
        """``derived``: band power / quality to attach (``BandOutsideAxis`` if a band does not fit
        the axis); ``rails``: the values a saturated channel sits at (quality's rail check)."""
        if srate <= 0:
            raise ValueError("a sliding STFT needs a regular sampling rate")
        self.params = params
        self.srate = float(srate)
        n = params.nperseg
        self._window = get_window(params.window, n)
        scale = 1.0 / (self.srate * float(np.sum(self._window**2)))
        freqs = np.fft.rfftfreq(n, 1.0 / self.srate)
        self._crop = _frequency_crop(freqs, params.fmin, params.fmax)
        # One-sided density: double every bin except DC and (for even n) Nyquist, as scipy does.
        gain = np.full(freqs.size, 2.0 * scale)
        gain[0] = scale
        if n % 2 == 0:
            gain[-1] = scale
        # Band power and quality use the whole axis (FMIN/FMAX only crop what is stored), so
        # with them on, the power of every bin is computed and the crop taken afterwards.
        self._derived = (
            Derived(freqs, bin_widths(freqs, self.srate / n), derived) if derived is not None and derived.active else None
        )
        self._rails = rails
        self._power_bins = self._crop if self._derived is None else slice(None)
        self._gain = gain[self._power_bins]
        self._mean_weights = np.full(n, 1.0 / n)  # a mean as one BLAS dot product
        self._half_window_s = n / 2.0 / self.srate
        self.layout = FrameLayout(
            stream=stream,
            channels=tuple(channels),
            frequencies=freqs[self._crop],
            srate=self.srate,
            bands=self._derived.bands if self._derived is not None else (),
            key=key,
        )
        n_ch = len(channels)
        self._capacity = 2 * n + max_chunk
        self._buf = np.empty((n_ch, self._capacity), dtype=np.float64)
        self._times = np.empty(self._capacity, dtype=np.float64)
        self._counter = _FrameCounter()
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples: no window may span a gap or a reconnection."""
        self._start = 0  # first sample of the next window
        self._end = 0  # one past the last buffered sample

    def samples_needed(self) -> int:
        return max(1, self.params.nperseg - (self._end - self._start))

    def push(self, samples: np.ndarray, times: np.ndarray) -> list[SpectrumFrame]:
        """Add ``samples`` (n_samples x n_channels) and return every window now complete."""
        total = samples.shape[0]
        if self._end + total <= self._capacity:  # the common case: one copy, one drain
            self._buf[:, self._end : self._end + total] = samples.T
            self._times[self._end : self._end + total] = times
            self._end += total
            return self._drain() if self._end - self._start >= self.params.nperseg else []
        frames: list[SpectrumFrame] = []
        offset = 0
        while offset < total:
            self._compact()
            take = min(total - offset, self._capacity - self._end)
            self._buf[:, self._end : self._end + take] = samples[offset : offset + take].T
            self._times[self._end : self._end + take] = times[offset : offset + take]
            self._end += take
            offset += take
            frames.extend(self._drain())
        return frames

    def _compact(self) -> None:
        """Move the unconsumed tail (< nperseg samples) to the front of the buffer."""
        keep = self._end - self._start
        self._buf[:, :keep] = self._buf[:, self._start : self._end]
        self._times[:keep] = self._times[self._start : self._end]
        self._start, self._end = 0, keep

    def _drain(self) -> list[SpectrumFrame]:
        # NaN/Inf samples give non-finite spectra for their windows; the sinks leave those out,
        # count and report them, so numpy's own warnings would only be noise on stderr.
        with np.errstate(invalid="ignore", over="ignore"):
            return self._transform()

    def _transform(self) -> list[SpectrumFrame]:
        n, hop = self.params.nperseg, self.params.hop
        available = self._end - self._start
        if available < n:
            return []
        count = (available - n) // hop + 1
        start = self._start
        if count == 1:
            windows = self._buf[:, None, start : start + n]
        else:  # (channels, windows, nperseg) view without copying, then one batched FFT
            span = self._buf[:, start : start + (count - 1) * hop + n]
            windows = np.lib.stride_tricks.sliding_window_view(span, n, axis=1)[:, ::hop]
        # scipy's order exactly (constant detrend, window, transform): rearranging it by
        # linearity saves a pass but drifts by up to 1e-5 dB on DC-coupled amplifiers' offsets.
        if count == 1:
            means = windows @ self._mean_weights
        else:  # window means from one cumulative sum instead of a strided reduction
            sums = np.cumsum(span, axis=1)
            ends = sums[:, n - 1 :: hop][:, :count]
            starts = np.concatenate((np.zeros((span.shape[0], 1)), sums[:, hop - 1 :: hop][:, : count - 1]), axis=1)
            means = (ends - starts) / n
        segments = windows - means[..., None]
        products: dict[int, Products] = {}
        if self._derived is not None:
            chosen = self._derived.selected(self._counter.next_seq, count)
            if chosen.size:
                picked = segments if chosen.size == count else segments[:, chosen]
                # population std of the detrended window, before the window function is applied
                std = np.sqrt(np.einsum("cwn,cwn->cw", picked, picked) / n)
                rails = rail_fractions(windows if chosen.size == count else windows[:, chosen], self._rails)
                dc = means[:, chosen]
        segments *= self._window
        spectra = np.fft.rfft(segments, axis=-1)[..., self._power_bins]
        power = np.square(spectra.real)
        power += np.square(spectra.imag)
        power *= self._gain
        if self._derived is not None and chosen.size:
            picked_power = power if chosen.size == count else power[:, chosen]
            computed = self._derived.compute(picked_power, std=std, dc_offset=dc, rail_fraction=rails)
            products = dict(zip(chosen.tolist(), computed))
            power = power[..., self._crop]
        elif self._derived is not None:
            power = power[..., self._crop]
        db = to_db(power)
        self._start += count * hop
        if count == 1:
            return [self._frame(start, db[:, 0, :], products.get(0))]
        return [self._frame(start + k * hop, db[:, k, :], products.get(k)) for k in range(count)]

    def _frame(self, start: int, db: np.ndarray, products: Products | None) -> SpectrumFrame:
        band_db, band_rel, quality = products if products is not None else (None, None, None)
        return SpectrumFrame(
            layout=self.layout,
            seq=self._counter.take(),
            time_ns=round((self._times[start] + self._half_window_s) * 1e9),
            newest_sample_ns=round(self._times[start + self.params.nperseg - 1] * 1e9),
            power_db=np.ascontiguousarray(db),
            band_db=band_db,
            band_rel=band_rel,
            quality=quality,
        )


PrecomputedScale = Literal["db", "power"]


class PrecomputedEngine:
    """Each LSL sample is one spectrum per channel, flattened channel-major.

    A sample of ``n_channels * n_bins`` values is read as ``[ch0 bin0..binB-1, ch1 bin0.., ...]``;
    ``n_bins`` is the length of the frequency axis, so the channel count follows from the sample
    width. A single-channel spectrum is the ``n_channels == 1`` case.
    """

    def __init__(
        self,
        *,
        stream: str,
        channels: Sequence[str],
        frequencies: np.ndarray,
        scale: PrecomputedScale,
        fmin: float | None = None,
        fmax: float | None = None,
        derived: DerivedSettings | None = None,
        key: str = "",
    ) -> None:
        freqs = np.asarray(frequencies, dtype=np.float64)
        self._crop = _frequency_crop(freqs, fmin, fmax)
        self._n_bins = freqs.size
        self._scale = scale
        self._derived = Derived(freqs, bin_widths(freqs), derived) if derived is not None and derived.active else None
        self.layout = FrameLayout(
            stream=stream,
            channels=tuple(channels),
            frequencies=freqs[self._crop],
            srate=0.0,
            bands=self._derived.bands if self._derived is not None else (),
            key=key,
        )
        self._counter = _FrameCounter()

    def reset(self) -> None:
        """Nothing is buffered between samples."""

    def samples_needed(self) -> int:
        return 1

    def push(self, samples: np.ndarray, times: np.ndarray) -> list[SpectrumFrame]:
        n_ch = len(self.layout.channels)
        full = samples.reshape(samples.shape[0], n_ch, self._n_bins)
        cube = full[:, :, self._crop]
        values = cube.astype(np.float32) if self._scale == "db" else to_db(cube.astype(np.float64))
        time_ns = np.rint(times * 1e9).astype(np.int64)
        products: dict[int, Products] = {}
        if self._derived is not None:
            chosen = self._derived.selected(self._counter.next_seq, len(time_ns))
            if chosen.size:
                # bands integrate linear power over the uncropped axis; dB is converted back
                # (the EPS inside a dB value is 1e-30 of power: nothing at any real scale)
                linear = np.moveaxis(full[chosen], 0, 1).astype(np.float64)
                if self._scale == "db":
                    linear = np.power(10.0, linear / 10.0)
                products = dict(zip(chosen.tolist(), self._derived.compute(linear)))
        frames = []
        for k, t in enumerate(time_ns):
            band_db, band_rel, quality = products.get(k, (None, None, None))
            frames.append(
                SpectrumFrame(
                    layout=self.layout,
                    seq=self._counter.take(),
                    time_ns=int(t),
                    newest_sample_ns=int(t),
                    power_db=np.ascontiguousarray(values[k]),
                    band_db=band_db,
                    band_rel=band_rel,
                    quality=quality,
                )
            )
        return frames
