"""Samples to spectra: the sliding STFT (identical to scipy) and its windows."""
