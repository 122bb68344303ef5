"""INFLUXDB_MAX_COLUMNS: a wide layout over the server's columns per table is refused at start.

InfluxDB 3 Core/Enterprise document "Maximum number of columns per table: 500" (time and tags
included); the wide schema needs one column per bin plus time, channel and stream_name.
"""

from __future__ import annotations

import numpy as np
import pytest

from bridge.cli import main
from bridge.config import build_settings, load_options
from bridge.pipeline import build_engine
from bridge.sources.lsl import StreamDescription, StreamRejected


def _sentence(capsys: pytest.CaptureFixture[str]) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_wide_nperseg_over_the_limit_exits_2_before_connecting(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LSL_STREAM_NAME", "x")
    monkeypatch.setenv("SPECTRUM_NPERSEG", "1024")  # 513 bins + 3 = 516 columns
    assert main(["run"]) == 2
    line = _sentence(capsys)
    assert "513 frequency bins" in line and "516 columns" in line and "INFLUXDB_MAX_COLUMNS (500" in line
    assert "INFLUXDB_SCHEMA=long" in line and "SPECTRUM_FMAX" in line


@pytest.mark.parametrize("env", [{"SPECTRUM_NPERSEG": "992"}, {"SPECTRUM_NPERSEG": "1024", "INFLUXDB_SCHEMA": "long"},
                                 {"SPECTRUM_NPERSEG": "1024", "INFLUXDB_MAX_COLUMNS": "0"},
                                 {"SPECTRUM_NPERSEG": "1024", "SPECTRUM_FMAX": "100"}])
def test_layouts_that_fit_or_are_not_known_yet_start(env: dict[str, str]) -> None:
    build_settings(load_options({"LSL_STREAM_NAME": "x", "INFLUXDB_URL": "", "GRAFANA_URL": "", **env}), check_hosts=False)


def _description(srate: float) -> StreamDescription:
    return StreamDescription("EEG", "EEG", "", "h", "u", 2, srate, "float32", ("Fz", "Cz"))


def test_bins_left_by_fmin_fmax_are_checked_once_the_stream_is_known() -> None:
    def settings(fmax: str):  # type: ignore[no-untyped-def]
        env = {"LSL_STREAM_NAME": "x", "INFLUXDB_URL": "", "GRAFANA_URL": "", "SPECTRUM_NPERSEG": "1024",
               "SPECTRUM_NOVERLAP": "512", "SPECTRUM_FMAX": fmax}
        return build_settings(load_options(env), check_hosts=False).spectrum

    engine, _ = build_engine(_description(1000.0), settings("400"))  # bins 0..400 Hz every 0.977 Hz
    expected = int(np.count_nonzero(np.fft.rfftfreq(1024, 1 / 1000) <= 400))
    assert engine.layout.frequencies.size == expected <= 497
    with pytest.raises(StreamRejected, match=r"needs \d+ columns per table.*INFLUXDB_SCHEMA=long"):
        build_engine(_description(1000.0), settings("499"))  # 512 bins
