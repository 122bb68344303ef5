"""eeg-bridge: LSL EEG -> power spectra -> Grafana Live + InfluxDB."""

__version__ = "0.1.0"
