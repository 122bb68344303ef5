"""The straightforward sliding spectrum: a rolling buffer and ``scipy.signal.spectrogram`` per hop.

This is what most people would write first (and what the bridge's ``StftEngine`` must beat):
append every chunk to a buffer, and each time another hop of samples has arrived, call
``scipy.signal.spectrogram`` on the last ``nperseg`` samples. Same parameters and dB formula as
the bridge, so the outputs can be compared value by value.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from bridge.dsp.spectrum import to_db


class NaiveStft:
    def __init__(self, n_channels: int, fs: float, nperseg: int, noverlap: int, window: str = "hann") -> None:
        self.fs, self.nperseg, self.noverlap, self.window = fs, nperseg, noverlap, window
        self.hop = nperseg - noverlap
        self._buf = np.empty((n_channels, 0))
        self._times = np.empty(0)
        self._next_end = nperseg  # window ends are counted in buffer samples

    def push(self, samples: np.ndarray, times: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Add samples (n x channels); return (Unix time of the window centre, dB channels x bins) per hop."""
        self._buf = np.concatenate((self._buf, samples.T.astype(np.float64)), axis=1)
        self._times = np.concatenate((self._times, times))
        out: list[tuple[float, np.ndarray]] = []
        while self._buf.shape[1] >= self._next_end:
            start = self._next_end - self.nperseg
            _f, _t, sxx = scipy.signal.spectrogram(
                self._buf[:, start : self._next_end], fs=self.fs, window=self.window, nperseg=self.nperseg,
                noverlap=self.noverlap, scaling="density", mode="psd",
            )
            out.append((float(self._times[start]) + self.nperseg / 2 / self.fs, to_db(sxx[:, :, 0])))
            self._next_end += self.hop
        # keep only what the next window still needs
        drop = self._next_end - self.nperseg
        if drop > 0:
            self._buf = self._buf[:, drop:]
            self._times = self._times[drop:]
            self._next_end -= drop
        return out
