"""STFT windows, computed exactly as ``scipy.signal.get_window(name, n)`` (periodic) does.

Importing ``scipy.signal`` costs the bridge ~50 MB of resident memory for a handful of cosine
sums, on a laptop that also runs the acquisition software. The common windows are therefore
computed here with scipy's own formulas (same operations, bit-identical; a test compares them),
and only an unusual window name falls back to importing scipy.
"""

from __future__ import annotations

import numpy as np

#: scipy's general_cosine coefficients (general_hamming uses ``1 - alpha``, kept as written).
_COSINE_SUMS: dict[str, tuple[float, ...]] = {
    "hann": (0.5, 1.0 - 0.5),
    "hamming": (0.54, 1.0 - 0.54),
    "blackman": (0.42, 0.50, 0.08),
    "nuttall": (0.3635819, 0.4891775, 0.1365995, 0.0106411),
    "blackmanharris": (0.35875, 0.48829, 0.14128, 0.01168),
    "flattop": (0.21557895, 0.41663158, 0.277263158, 0.083578947, 0.006947368),
}
_ALIASES = {
    "han": "hann", "hamm": "hamming", "ham": "hamming", "black": "blackman", "blk": "blackman",
    "nutl": "nuttall", "nut": "nuttall", "blackharr": "blackmanharris", "bkh": "blackmanharris",
    "flat": "flattop", "flt": "flattop", "box": "boxcar", "ones": "boxcar", "rect": "boxcar",
    "rectangular": "boxcar", "bart": "bartlett", "brt": "bartlett",
}


def get_window(name: str, n: int) -> np.ndarray:
    """A periodic (``fftbins=True``) window of length ``n``; ValueError for unknown names."""
    key = _ALIASES.get(name, name)
    if n <= 1:
        return np.ones(n)
    m = n + 1  # periodic = the symmetric window one longer, truncated
    if key in _COSINE_SUMS:
        fac = np.linspace(-np.pi, np.pi, m, dtype=np.float64)
        w = np.zeros(m, dtype=np.float64)
        for k, a in enumerate(_COSINE_SUMS[key]):
            w += a * np.cos(k * fac)
        return w[:-1]
    if key == "boxcar":
        return np.ones(n, dtype=np.float64)
    if key == "bartlett":
        i = np.arange(0, m, dtype=np.float64)
        return np.where(i <= (m - 1) / 2.0, 2.0 * i / (m - 1), 2.0 - 2.0 * i / (m - 1))[:-1]
    import scipy.signal  # noqa: PLC0415 - only for windows not computed above

    try:
        return np.asarray(scipy.signal.get_window(name, n), dtype=np.float64)
    except (ValueError, TypeError):
        raise ValueError(
            f"'{name}' is not a window scipy.signal.get_window knows (try hann, hamming, blackman)"
        ) from None
