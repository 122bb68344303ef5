"""``eeg-bridge import`` (a real subprocess) of files with known content into a real InfluxDB 1.x.

The XDF files come from tests/xdf_writer.py (written from the XDF specification, independent of
pyxdf); the EDF files from pyedflib's writer. What is stored is read back with InfluxQL and
compared with scipy.signal.spectrogram on the very samples in the file, with Unix times worked
out here from the file's recording date and clock offsets, and with the markers' text.
"""

from __future__ import annotations

import calendar
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pyedflib
import pylsl
import pytest
import scipy.signal

from tests.bridge_process import REPO, BridgeProcess
from tests.influxdb_server import InfluxDBServer
from tests.xdf_writer import XdfStream, write_xdf

pytestmark = pytest.mark.influxdb

NPERSEG, NOVERLAP = 128, 64
HOP = NPERSEG - NOVERLAP
#: 3 decimals in the line protocol (0.0005) plus float32 rounding of the dB value.
VALUE_TOLERANCE = 0.0005 + 1e-4
#: Frame times pass through float64 Unix seconds (~0.24 us resolution in 2026) before rounding to ns.
TIME_TOLERANCE_NS = 2_000

# The recording: LabRecorder's <datetime> is local time with its offset, whole seconds.
DATETIME = "2026-01-02T10:00:00+0100"
DATETIME_UNIX = calendar.timegm((2026, 1, 2, 9, 0, 0))  # the same instant, in UTC
FS_A, N_A = 250.0, 2500  # stream A: 4 ch float32, 10 s, on the recorder's own clock
FS_B, N_B = 500.0, 4000  # stream B: 3 ch double64, 8 s, on a remote clock
A_START, B_START = 1000.0, 200.0  # first sample on each stream's own LSL clock
B_OFFSET = 800.3  # remote clock + B_OFFSET = recorder clock (the ClockOffset value)
#: The earliest clock measurement on the recorder's clock: A's (collection 999.6, offset 0).
T0 = 999.6
LABELS_A = ["Fz", "Cz", "Pz", "O1"]
MARKERS = [(1001.25, "stimulus \"A\" onset"), (1004.5, "response|left"), (1007.75, "end")]


def unix_a(k: np.ndarray) -> np.ndarray:
    """Unix seconds of stream A's sample k: datetime + 0.5 s (midpoint of its second) + (t - T0)."""
    return DATETIME_UNIX + 0.5 + (A_START + k / FS_A - T0)


def unix_b(k: np.ndarray) -> np.ndarray:
    return DATETIME_UNIX + 0.5 + (B_START + B_OFFSET + k / FS_B - T0)


def signal_a() -> np.ndarray:
    rng = np.random.default_rng(11)
    t = np.arange(N_A) / FS_A
    x = rng.standard_normal((N_A, 4)) * 3.0
    x[:, 3] += 20 * np.sin(2 * np.pi * 10 * t)  # alpha on O1
    return x.astype(np.float32)


def signal_b() -> np.ndarray:
    rng = np.random.default_rng(12)
    t = np.arange(N_B) / FS_B
    x = rng.standard_normal((N_B, 3)) * 2.0
    x[:, 0] += 15 * np.sin(2 * np.pi * 39.0625 * t)  # exactly on a bin at 500 Hz / 128
    return x


def xdf_streams(chunk_samples: int = 100) -> list[XdfStream]:
    return [
        XdfStream(1, "EEG A", "EEG", "float32", FS_A, signal_a(), A_START + np.arange(N_A) / FS_A, LABELS_A,
                  source_id="amp-a", clock_offsets=[(999.6, 0.0), (1004.6, 0.0)], chunk_samples=chunk_samples),
        XdfStream(2, "EEG B", "EEG", "double64", FS_B, signal_b(), B_START + np.arange(N_B) / FS_B, None,
                  source_id="amp-b", clock_offsets=[(199.5, B_OFFSET), (204.5, B_OFFSET)], chunk_samples=chunk_samples),
        XdfStream(3, "Task Markers", "Markers", "string", 0.0, [[text] for _, text in MARKERS],
                  np.array([t for t, _ in MARKERS]), clock_offsets=[(999.8, 0.0), (1004.8, 0.0)]),
    ]


def expected_db(x: np.ndarray, fs: float) -> np.ndarray:
    """(frames, channels, bins), scipy on the samples as stored in the file."""
    _, _, power = scipy.signal.spectrogram(x.T.astype(np.float64), fs, window="hann", nperseg=NPERSEG,
                                           noverlap=NOVERLAP, scaling="density", mode="psd")
    return np.transpose(10 * np.log10(power + 1e-30), (2, 0, 1))


def frame_count(samples: int) -> int:
    return (samples - NPERSEG) // HOP + 1


def centre_times_ns(unix: Callable[[np.ndarray], np.ndarray], frames: int, fs: float) -> np.ndarray:
    """Window centres (scipy's t: start + nperseg/2/fs) in Unix ns."""
    return unix(np.arange(frames) * HOP + NPERSEG / 2) * 1e9


def bin_field(freq: float) -> str:
    return f"{freq:06.2f}"


# ---- helpers ----------------------------------------------------------------------------------


def env_for(server: InfluxDBServer, db: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "INFLUXDB_URL": server.url, "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": db, "GRAFANA_URL": "",
        "SPECTRUM_NPERSEG": str(NPERSEG), "SPECTRUM_NOVERLAP": str(NOVERLAP), "SPOOL_DIR": str(tmp_path / "spool"),
        "BATCH_INTERVAL_SEC": "0.2", **extra,
    }


def run_import(bridges: Callable[..., BridgeProcess], env: dict[str, str], *args: str, timeout: float = 180) -> tuple[int, str]:
    process = bridges(env, ("import", *args))
    code = process.proc.wait(timeout)  # type: ignore[union-attr]
    return code, process.output()


def query(server: InfluxDBServer, db: str, q: str) -> list[list]:
    series = server.query(q, db=db)["results"][0].get("series", [])
    return series[0]["values"] if series else []


def column(server: InfluxDBServer, db: str, field: str, stream: str, channel: str) -> tuple[np.ndarray, np.ndarray]:
    rows = query(server, db, f'SELECT "{field}" FROM "eeg_spectrum" WHERE "stream_name" = \'{stream}\' '
                             f"AND \"channel\" = '{channel}'")
    return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64)


def row_counts(server: InfluxDBServer, db: str) -> dict[str, int]:
    counts = {}
    for measurement in ("eeg_spectrum", "eeg_bands", "eeg_quality", "eeg_markers"):
        rows = query(server, db, f'SELECT count(*) FROM "{measurement}"')
        counts[measurement] = max(int(v) for v in rows[0][1:]) if rows else 0
    return counts


def series_counts(server: InfluxDBServer, db: str) -> dict[tuple[str, str], int]:
    body = server.query('SELECT count("000.00") FROM "eeg_spectrum" GROUP BY "stream_name", "channel"', db=db)
    return {(s["tags"]["stream_name"], s["tags"]["channel"]): int(s["values"][0][1])
            for s in body["results"][0].get("series", [])}


# ---- XDF --------------------------------------------------------------------------------------


def test_xdf_two_streams_and_markers(influxdb_server: InfluxDBServer, influxdb_database: str, bridges, tmp_path: Path) -> None:
    path = tmp_path / "session.xdf"
    write_xdf(path, DATETIME, xdf_streams())
    env = env_for(influxdb_server, influxdb_database, tmp_path)
    code, output = run_import(bridges, env, str(path))
    assert code == 0, output
    frames_a, frames_b = frame_count(N_A), frame_count(N_B)
    # not a terminal: no progress bar, a summary line
    assert f"eeg-bridge import: 1 file(s), {frames_a + frames_b} frames and 3 markers are in InfluxDB." in output
    assert "frame/s]" not in output
    counts = series_counts(influxdb_server, influxdb_database)
    assert counts == {**{("EEG A", ch): frames_a for ch in LABELS_A}, **{("EEG B", f"ch{i}"): frames_b for i in range(3)}}

    # A: the 10 Hz bin of O1 against scipy, every frame; times from the datetime and clock offsets
    freqs_a = np.fft.rfftfreq(NPERSEG, 1 / FS_A)
    k10 = int(np.argmin(np.abs(freqs_a - 10)))
    times, values = column(influxdb_server, influxdb_database, bin_field(freqs_a[k10]), "EEG A", "O1")
    expected = expected_db(signal_a(), FS_A)
    np.testing.assert_allclose(values, expected[:, 3, k10], atol=VALUE_TOLERANCE)
    assert values.max() > expected[:, 0, k10].max() + 10  # the sine stands out over the noise channel
    assert np.all(np.abs(times - centre_times_ns(unix_a, frames_a, FS_A)) < TIME_TOLERANCE_NS)
    times_a = times

    # B: recorded on another clock, mapped through its ClockOffset chunks onto the recorder's
    freqs_b = np.fft.rfftfreq(NPERSEG, 1 / FS_B)
    k = int(np.argmin(np.abs(freqs_b - 39.0625)))
    times, values = column(influxdb_server, influxdb_database, bin_field(freqs_b[k]), "EEG B", "ch0")
    np.testing.assert_allclose(values, expected_db(signal_b(), FS_B)[:, 0, k], atol=VALUE_TOLERANCE)
    assert np.all(np.abs(times - centre_times_ns(unix_b, frames_b, FS_B)) < TIME_TOLERANCE_NS)

    # band power and quality: attached by the same engine, one row per channel and frame, at the frame times
    bands = query(influxdb_server, influxdb_database,
                  'SELECT "alpha", "beta" FROM "eeg_bands" WHERE "stream_name" = \'EEG A\' AND "channel" = \'O1\'')
    assert [r[0] for r in bands] == list(times_a)
    assert all(alpha > beta for _, alpha, beta in bands)  # the 10 Hz sine is alpha
    quality = query(influxdb_server, influxdb_database,
                    'SELECT "state" FROM "eeg_quality" WHERE "stream_name" = \'EEG B\' AND "channel" = \'ch1\'')
    # B is 500 Hz / hop 64 = 7.8 frames/s: by default products on every 2nd frame (about 4 a second)
    assert len(quality) == len(range(0, frames_b, 2))

    # markers: text and time (through the marker stream's own clock offsets: 0 here)
    rows = query(influxdb_server, influxdb_database, 'SELECT "marker", "stream_name" FROM "eeg_markers"')
    assert [(r[1], r[2]) for r in rows] == [(text, "Task Markers") for _, text in MARKERS]
    want = [(DATETIME_UNIX + 0.5 + (t - T0)) * 1e9 for t, _ in MARKERS]
    assert np.all(np.abs(np.array([r[0] for r in rows]) - np.array(want)) < TIME_TOLERANCE_NS)

    # a second import of the same file overwrites: row counts unchanged
    before = row_counts(influxdb_server, influxdb_database)
    code, output = run_import(bridges, env, str(path))
    assert code == 0, output
    assert row_counts(influxdb_server, influxdb_database) == before
    assert series_counts(influxdb_server, influxdb_database) == counts


def test_xdf_selection_by_name(influxdb_server: InfluxDBServer, influxdb_database: str, bridges, tmp_path: Path) -> None:
    path = tmp_path / "session.xdf"
    write_xdf(path, DATETIME, xdf_streams())
    env = env_for(influxdb_server, influxdb_database, tmp_path, LSL_STREAM_NAME="EEG B", SPECTRUM_CHANNELS="2")
    code, output = run_import(bridges, env, str(path))
    assert code == 0, output
    assert series_counts(influxdb_server, influxdb_database) == {("EEG B", "ch2"): frame_count(N_B)}


def test_truncated_xdf_imports_the_intact_part(influxdb_server: InfluxDBServer, influxdb_database: str, bridges,
                                               tmp_path: Path) -> None:
    full = tmp_path / "full.xdf"
    written = write_xdf(full, DATETIME, xdf_streams(chunk_samples=250))
    samples = [w for w in written if w.tag == 3]
    cut_inside = samples[len(samples) // 2]  # the recording stops in the middle of this chunk
    end = cut_inside.end - 40
    path = tmp_path / "interrupted.xdf"
    path.write_bytes(full.read_bytes()[:end])
    intact = {sid: sum(w.samples for w in samples if w.stream_id == sid and w.end <= end) for sid in (1, 2)}
    code, output = run_import(bridges, env_for(influxdb_server, influxdb_database, tmp_path), str(path))
    assert code == 0, output
    intact_end = written[written.index(cut_inside) - 1].end  # the intact part ends where that chunk starts
    assert f"cut off at byte {intact_end} of {end} (the recording was interrupted)" in output
    assert "importing the intact part: 'EEG A' up to" in output
    assert "Traceback" not in output
    counts = series_counts(influxdb_server, influxdb_database)
    assert counts[("EEG A", "Fz")] == frame_count(intact[1])
    assert counts[("EEG B", "ch0")] == frame_count(intact[2])


@pytest.mark.parametrize("into", [1, 2, 6, 12, 30, -40, -1], ids=lambda k: f"byte{k:+d}")
def test_cut_anywhere_keeps_exactly_the_complete_chunks(tmp_path: Path, into: int) -> None:
    """A recording cut anywhere inside a Samples chunk (its length, tag, StreamId, sample count,
    a timestamp, the last value byte): exactly the complete chunks' samples, and a warning."""
    from bridge.sources.recorded import StreamSelector
    from bridge.sources.xdf import open_xdf

    full = tmp_path / "full.xdf"
    written = write_xdf(full, DATETIME, xdf_streams(chunk_samples=250))
    samples = [w for w in written if w.tag == 3]
    cut_inside = samples[len(samples) // 2]
    start = written[written.index(cut_inside) - 1].end
    end = start + into if into > 0 else cut_inside.end + into
    path = tmp_path / "cut.xdf"
    path.write_bytes(full.read_bytes()[:end])
    recording = open_xdf(path, StreamSelector(), StreamSelector())
    intact = {sid: sum(w.samples for w in samples if w.stream_id == sid and w.end <= end) for sid in (1, 2)}
    assert [s.samples for s in recording.streams] == [intact[1], intact[2]]
    np.testing.assert_array_equal(recording.streams[0].read(0, intact[1])[0], signal_a()[: intact[1]])
    assert recording.warnings == [recording.warnings[0]] and f"cut off at byte {start} of {end}" in recording.warnings[0]


def test_xdf_recorded_on_this_machine_uses_its_lsl_clock(influxdb_server: InfluxDBServer, influxdb_database: str,
                                                         bridges, tmp_path: Path) -> None:
    """LSL times from this machine's clock and a datetime of now: the importer maps them exactly as a
    live bridge here does (time.time() - local_clock()), to the millisecond, not to +-0.5 s."""
    n = 1000
    lsl_start = pylsl.local_clock() - 30.0
    offset = time.time() - pylsl.local_clock()
    created = datetime.fromtimestamp(lsl_start - 0.7 + offset).astimezone()
    stream = XdfStream(1, "Here", "EEG", "float32", FS_A, signal_a()[:n], lsl_start + np.arange(n) / FS_A, LABELS_A,
                       clock_offsets=[(lsl_start - 0.2, 0.0), (lsl_start + 3.0, 0.0)])
    path = tmp_path / "here.xdf"
    write_xdf(path, created.strftime("%Y-%m-%dT%H:%M:%S%z"), [stream])
    code, output = run_import(bridges, env_for(influxdb_server, influxdb_database, tmp_path), str(path))
    assert code == 0, output
    assert "this machine's LSL clock" in output
    times, _ = column(influxdb_server, influxdb_database, "000.00", "Here", "Fz")
    want = (lsl_start + offset + (np.arange(frame_count(n)) * HOP + NPERSEG / 2) / FS_A) * 1e9
    assert times.size == frame_count(n)
    assert np.all(np.abs(times - want) < 5e6)  # 5 ms: the offset is re-read by the importer a moment later


# ---- EDF / BDF ---------------------------------------------------------------------------------

FS_E = 256
N_E = FS_E * 12
EDF_START = datetime(2026, 3, 4, 5, 6, 7)
EDF_START_UNIX = calendar.timegm((2026, 3, 4, 5, 6, 7))  # read in UTC (--timezone UTC)
EDF_LABELS = ["Fp1", "Fp2", "Oz"]
ANNOTATIONS = [(1.5, "eyes closed"), (7.25, "eyes open")]


def write_edf(path: Path, *, extra_rate: int | None = None, bdf: bool = False) -> np.ndarray:
    """Three EEG channels (10 Hz on Oz), optionally a fourth channel at another rate; annotations."""
    rng = np.random.default_rng(5)
    t = np.arange(N_E) / FS_E
    x = rng.standard_normal((3, N_E)) * 5.0
    x[2] += 40 * np.sin(2 * np.pi * 10 * t)
    kind = pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS
    labels = EDF_LABELS + (["ECG"] if extra_rate else [])
    writer = pyedflib.EdfWriter(str(path), len(labels), file_type=kind)
    digital = (-(1 << 23), (1 << 23) - 1) if bdf else (-32768, 32767)
    headers = []
    for i, label in enumerate(labels):
        headers.append({"label": label, "dimension": "uV", "sample_frequency": extra_rate if i == 3 else FS_E,
                        "physical_min": -200.0, "physical_max": 200.0, "digital_min": digital[0],
                        "digital_max": digital[1], "transducer": "", "prefilter": ""})
    writer.setSignalHeaders(headers)
    writer.setStartdatetime(EDF_START)
    signals = list(x) + ([np.zeros(extra_rate * 12)] if extra_rate else [])
    writer.writeSamples(signals)
    for onset, text in ANNOTATIONS:
        writer.writeAnnotation(onset, -1, text)
    writer.close()
    reader = pyedflib.EdfReader(str(path))  # the samples as stored (quantised to the digital range)
    try:
        return np.stack([reader.readSignal(i) for i in range(3)], axis=1)
    finally:
        reader.close()


@pytest.mark.parametrize("bdf", [False, True], ids=["edf", "bdf"])
def test_edf_import(influxdb_server: InfluxDBServer, influxdb_database: str, bridges, tmp_path: Path, bdf: bool) -> None:
    path = tmp_path / ("night.bdf" if bdf else "night.edf")
    stored = write_edf(path, bdf=bdf)
    env = env_for(influxdb_server, influxdb_database, tmp_path)
    code, output = run_import(bridges, env, str(path), "--timezone", "UTC")
    assert code == 0, output
    frames = frame_count(N_E)
    assert series_counts(influxdb_server, influxdb_database) == {("night", ch): frames for ch in EDF_LABELS}
    freqs = np.fft.rfftfreq(NPERSEG, 1 / FS_E)
    k = int(np.argmin(np.abs(freqs - 10)))
    times, values = column(influxdb_server, influxdb_database, bin_field(freqs[k]), "night", "Oz")
    np.testing.assert_allclose(values, expected_db(stored, FS_E)[:, 2, k], atol=VALUE_TOLERANCE)
    want = (EDF_START_UNIX + (np.arange(frames) * HOP + NPERSEG / 2) / FS_E) * 1e9
    assert np.all(np.abs(times - want) < TIME_TOLERANCE_NS)
    rows = query(influxdb_server, influxdb_database, 'SELECT "marker" FROM "eeg_markers"')
    assert [r[1] for r in rows] == [text for _, text in ANNOTATIONS]
    assert [r[0] for r in rows] == [int(round((EDF_START_UNIX + onset) * 1e9)) for onset, _ in ANNOTATIONS]
    before = row_counts(influxdb_server, influxdb_database)
    code, output = run_import(bridges, env, str(path), "--timezone", "UTC")
    assert code == 0, output
    assert row_counts(influxdb_server, influxdb_database) == before


def test_edf_mixed_rates_needs_a_channel_choice(influxdb_server: InfluxDBServer, influxdb_database: str, bridges,
                                                tmp_path: Path) -> None:
    path = tmp_path / "mixed.edf"
    write_edf(path, extra_rate=128)
    env = env_for(influxdb_server, influxdb_database, tmp_path)
    code, output = run_import(bridges, env, str(path), "--timezone", "UTC")
    assert code == 2
    assert "the selected channels have different sampling rates (256 Hz: Fp1, Fp2, Oz (3); 128 Hz: ECG (1))" in output
    assert "SPECTRUM_CHANNELS" in output and "Traceback" not in output
    assert series_counts(influxdb_server, influxdb_database) == {}
    code, output = run_import(bridges, {**env, "SPECTRUM_CHANNELS": "Fp1,Oz"}, str(path), "--timezone", "UTC")
    assert code == 0, output
    assert series_counts(influxdb_server, influxdb_database) == {("mixed", "Fp1"): frame_count(N_E),
                                                                 ("mixed", "Oz"): frame_count(N_E)}


# ---- bad files and dry run -------------------------------------------------------------------


def test_bad_files_one_sentence_each(influxdb_server: InfluxDBServer, influxdb_database: str, bridges,
                                     tmp_path: Path) -> None:
    streams = xdf_streams()
    gaze = XdfStream(4, "Gaze", "Gaze", "float32", 60.0, np.zeros((100, 2)), 1000 + np.arange(100) / 60.0)
    no_eeg = tmp_path / "gaze.xdf"
    write_xdf(no_eeg, DATETIME, [gaze, streams[2]])
    strings = tmp_path / "markers.xdf"
    write_xdf(strings, DATETIME, [streams[2]])
    missing = tmp_path / "nowhere.xdf"
    other = tmp_path / "notes.csv"
    other.write_text("t,x\n")
    good = tmp_path / "good.xdf"
    write_xdf(good, DATETIME, streams)
    code, output = run_import(bridges, env_for(influxdb_server, influxdb_database, tmp_path),
                              str(no_eeg), str(strings), str(missing), str(other), str(good))
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.startswith("eeg-bridge import: ")]
    assert lines[:4] == [
        f"eeg-bridge import: {no_eeg}: no EEG-typed numeric stream, nothing to compute spectra from (it has: "
        "'Gaze' (type Gaze, float32, source_id -); 'Task Markers' (type Markers, string, source_id -)); choose a "
        "numeric stream with LSL_STREAM_NAME / LSL_STREAM_TYPE / LSL_SOURCE_ID.",
        f"eeg-bridge import: {strings}: only marker (string) streams, nothing to compute spectra from (it has: "
        "'Task Markers' (type Markers, string, source_id -)); choose a numeric stream with LSL_STREAM_NAME / "
        "LSL_STREAM_TYPE / LSL_SOURCE_ID.",
        f"eeg-bridge import: {missing}: no such file.",
        f"eeg-bridge import: {other}: unknown file type; import reads .xdf (LabRecorder), .edf and .bdf files.",
    ]
    assert "Traceback" not in output
    # the good file is still imported, and only it
    assert series_counts(influxdb_server, influxdb_database)[("EEG A", "Fz")] == frame_count(N_A)
    # a string stream chosen by name
    code, output = run_import(bridges, env_for(influxdb_server, influxdb_database, tmp_path,
                                               LSL_STREAM_NAME="Task Markers"), str(good))
    assert code == 2
    assert (f"{good}: stream 'Task Markers' (type Markers, string, source_id -) carries strings (markers), not signal; "
            "choose a numeric EEG stream.") in output
    code, output = run_import(bridges, env_for(influxdb_server, influxdb_database, tmp_path), str(good),
                              "--timezone", "Mars/Olympus")
    assert code == 2
    assert output.strip() == ("eeg-bridge: --timezone 'Mars/Olympus' is neither a time zone name (Europe/Berlin) "
                              "nor an offset (+01:00).")


def test_dry_run_lists_and_writes_nothing(influxdb_server: InfluxDBServer, influxdb_database: str, bridges,
                                          tmp_path: Path) -> None:
    path = tmp_path / "session.xdf"
    write_xdf(path, DATETIME, xdf_streams())
    edf = tmp_path / "night.edf"
    write_edf(edf)
    code, output = run_import(bridges, env_for(influxdb_server, influxdb_database, tmp_path), "--dry-run",
                              str(path), str(edf))
    assert code == 0, output
    assert (f"  stream 'EEG A' (type EEG, source_id amp-a): 4 channels (Fz, Cz, Pz, O1) at 250 Hz, 10.0 s, "
            f"{frame_count(N_A)} frames of 65 bins") in output
    assert (f"  stream 'EEG B' (type EEG, source_id amp-b): 3 channels (ch0, ch1, ch2) at 500 Hz, 8.0 s, "
            f"{frame_count(N_B)} frames of 65 bins") in output
    assert "  markers 'Task Markers': 3" in output
    assert f"  times: the file's recording date {DATETIME} (whole seconds) and its first clock measurement" in output
    assert (f"  stream 'night' (type EEG, source_id -): 3 channels (Fp1, Fp2, Oz) at 256 Hz, 12.0 s, "
            f"{frame_count(N_E)} frames of 65 bins") in output
    assert "  markers 'night': 2" in output
    assert series_counts(influxdb_server, influxdb_database) == {}


def test_imported_frames_line_up_with_live_frames(influxdb_server: InfluxDBServer, influxdb_database: str, bridges,
                                                  players, tmp_path: Path) -> None:
    """The same session archived live (a bridge on a real outlet) and recorded as LabRecorder would on
    this machine (same samples, same LSL timestamps): the import lands on the live frames."""
    from tests import test_archive as live

    archived = live.run_bridge_into(influxdb_server, influxdb_database, bridges, players, tmp_path, "wide")
    assert archived.exit_code == 0, archived.process.output()[-2000:]
    n = archived.signal.shape[0]
    stamps = archived.player_start + np.arange(n) / live.FS
    created = datetime.fromtimestamp(archived.player_start - 0.4 + archived.clock_offset).astimezone()
    recorded = XdfStream(1, archived.stream, "EEG", "float32", live.FS, archived.signal, stamps, live.LABELS,
                         clock_offsets=[(stamps[0] - 0.2, 0.0), (stamps[0] + 3.0, 0.0)])
    path = tmp_path / "recorded.xdf"
    write_xdf(path, created.strftime("%Y-%m-%dT%H:%M:%S%z"), [recorded])
    env = env_for(influxdb_server, influxdb_database, tmp_path, SPECTRUM_NPERSEG=str(live.NPERSEG),
                  SPECTRUM_NOVERLAP=str(live.NOVERLAP), INFLUXDB_MEASUREMENT="eeg_imported")
    code, output = run_import(bridges, env, str(path))
    assert code == 0, output

    def frames(measurement: str) -> tuple[np.ndarray, np.ndarray]:
        rows = query(influxdb_server, influxdb_database,
                     f'SELECT * FROM "{measurement}" WHERE "channel" = \'O1\' AND "stream_name" = \'{archived.stream}\'')
        bins = len(live.expected_bins())
        return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1 : 1 + bins] for r in rows], dtype=np.float64)

    live_times, live_values = frames("eeg_spectrum")
    times, values = frames("eeg_imported")
    assert live_times.size == times.size == live.FRAMES
    # the live bridge was connected before the first sample: same windows, so the same frames ...
    np.testing.assert_array_equal(values, live_values)
    # ... at the same times, to the tolerance the live archive itself keeps (liblsl's dejitter): far within one hop
    assert np.max(np.abs(times - live_times)) < 20e6 < live.HOP / live.FS * 1e9


def test_outage_during_import_loses_nothing(influxdb_private_server: InfluxDBServer, bridges, tmp_path: Path) -> None:
    """InfluxDB down while the file is read: the import waits (the spool holds the frames), the
    server comes back, and every frame and marker arrives; nothing is dropped to keep going."""
    server = influxdb_private_server
    server.create_database("outage")
    path = tmp_path / "session.xdf"
    write_xdf(path, DATETIME, xdf_streams())
    server.kill()
    process = bridges(env_for(server, "outage", tmp_path), ("import", str(path)))
    process.wait_for_output("cannot reach InfluxDB")
    assert process.alive()  # waiting, not giving up and not dropping
    server.start()
    code = process.proc.wait(120)  # type: ignore[union-attr]
    assert code == 0, process.output()
    assert "dropped" not in process.output()
    counts = series_counts(server, "outage")
    assert counts[("EEG A", "O1")] == frame_count(N_A) and counts[("EEG B", "ch0")] == frame_count(N_B)
    assert len(query(server, "outage", 'SELECT "marker" FROM "eeg_markers"')) == len(MARKERS)


def test_progress_bar_on_a_terminal(influxdb_server: InfluxDBServer, influxdb_database: str, tmp_path: Path) -> None:
    """On a terminal: tqdm's bar with frames done/total and frames/s (ETA while it runs)."""
    path = tmp_path / "session.xdf"
    write_xdf(path, DATETIME, xdf_streams())
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal has a size
    env = {**os.environ, **env_for(influxdb_server, influxdb_database, tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "import", str(path)], cwd=REPO, env=env,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has gone
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    total = frame_count(N_A) + frame_count(N_B)
    assert "session.xdf: 100%" in text and f"{total}/{total} [" in text and "frame/s]" in text, text
