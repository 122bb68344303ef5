"""The one dB convention of every product (spectra, band power, quality ratios).

Kept apart from ``spectrum.py`` so the band and quality modules, which the engines import, can
share it without an import cycle; ``bridge.dsp.spectrum`` re-exports both names.
"""

from __future__ import annotations

import numpy as np

#: Added to the power before the logarithm so that an all-zero channel gives -300 dB, not -inf.
EPS = 1e-30


def to_db(power: np.ndarray) -> np.ndarray:
    """``10*log10(P + EPS)`` as float32; overwrites ``power`` (a temporary in every caller)."""
    power += EPS
    np.log10(power, out=power)
    power *= 10.0
    return power.astype(np.float32)
