"""Band power and quality end to end: a real LSL outlet into a bridge subprocess into a real
InfluxDB; the stored rows, tags, fields and values are checked against the data model and an
independent computation (scipy's spectrogram, integrated here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.signal

from tests.bridge_process import wait_until
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.influxdb_server import InfluxDBServer
from tests.test_bands import (
    A, BANDS, CLIPPED, DF, FLAT, FS, GOOD1, GOOD2, LINE, NOVERLAP, NPERSEG, RAIL, SIGMA, SINE, bins_in, known_content,
)

LABELS = ["Sine", "Line", "Flat", "Clip", "N1", "N2"]
SECONDS = 12.0
FRAMES = (int(SECONDS * FS) - NPERSEG) // (NPERSEG - NOVERLAP) + 1
BAND_FIELDS = [name for b in BANDS for name in (b.name, f"{b.name}_rel")]
QUALITY_FIELDS = ["std", "dc_offset", "rail_fraction", "line_noise_db", "hf_ratio_db", "state", "flags"]


def select(server: InfluxDBServer, db: str, q: str) -> tuple[list[str], list[list]]:
    series = server.query(q, db=db)["results"][0].get("series")
    return (series[0]["columns"], series[0]["values"]) if series else ([], [])


def count(server: InfluxDBServer, db: str, measurement: str, field: str, channel: str) -> int:
    _, rows = select(server, db, f'SELECT COUNT("{field}") FROM "{measurement}" WHERE "channel" = \'{channel}\'')
    return int(rows[0][1]) if rows else 0


def test_bands_and_quality_are_archived_as_documented(
    influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players: list[Player], tmp_path: Path
) -> None:
    server, db = influxdb_server, influxdb_database
    name = unique("bands")
    outlet = make_outlet(name, channels=len(LABELS), rate=FS, labels=LABELS)
    process = bridges({
        "LSL_STREAM_NAME": name, "GRAFANA_URL": "", "INFLUXDB_URL": server.url, "INFLUXDB_API": "v1",
        "INFLUXDB_BUCKET": db, "SPECTRUM_NPERSEG": str(NPERSEG), "SPECTRUM_NOVERLAP": str(NOVERLAP),
        "QUALITY_RAIL": str(RAIL), "BATCH_INTERVAL_SEC": "0.5", "SPOOL_DIR": str(tmp_path / "spool"),
    })
    process.wait_for_output("connected to")
    x, _ = known_content(seconds=SECONDS, seed=11)
    x = x.astype(np.float32)  # what the float32 outlet carries
    player = Player(outlet, x, FS, chunk=16)
    players.append(player)
    player.start()
    assert player.done.wait(60)
    wait_until(lambda: all(count(server, db, "eeg_quality", "state", c) >= FRAMES for c in LABELS), 60, process.output)
    assert process.terminate() == 0

    # tags and field types exactly as documented
    for measurement, fields in (("eeg_bands", BAND_FIELDS), ("eeg_quality", QUALITY_FIELDS)):
        _, tag_keys = select(server, db, f'SHOW TAG KEYS FROM "{measurement}"')
        assert [t[0] for t in tag_keys] == ["channel", "stream_name"]
        _, field_keys = select(server, db, f'SHOW FIELD KEYS FROM "{measurement}"')
        expected_types = {f: ("integer" if f in ("state", "flags") else "float") for f in fields}
        assert dict(map(tuple, field_keys)) == expected_types
        _, values = select(server, db, f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "stream_name"')
        assert [v[1] for v in values] == [name]

    # values: the same frames as the spectra, equal to scipy's spectrogram integrated here
    _, spectrum_times = select(server, db, 'SELECT "000.00" FROM "eeg_spectrum" WHERE "channel" = \'Sine\'')
    assert len(spectrum_times) == FRAMES
    f, _, sxx = scipy.signal.spectrogram(x.T.astype(np.float64), FS, window="hann", nperseg=NPERSEG, noverlap=NOVERLAP)
    width = f[1] - f[0]
    masks = [(f >= b.low_hz) & (f < b.high_hz) for b in BANDS]
    union = sxx[:, np.any(masks, axis=0)].sum(axis=1) * width
    for c, label in enumerate(LABELS):
        columns, rows = select(server, db, f'SELECT * FROM "eeg_bands" WHERE "channel" = \'{label}\'')
        assert sorted(columns) == sorted(["time", "channel", "stream_name", *BAND_FIELDS])
        assert len(rows) == FRAMES and [r[0] for r in rows] == [t[0] for t in spectrum_times]
        got = {col: np.array([r[columns.index(col)] for r in rows], dtype=np.float64) for col in BAND_FIELDS}
        for band, mask in zip(BANDS, masks):
            power = sxx[c, mask].sum(axis=0) * width
            assert np.max(np.abs(got[band.name] - 10 * np.log10(power + 1e-30))) <= 2e-3, (label, band)
            rel = power / union[c] if c != FLAT else np.zeros(FRAMES)
            assert np.max(np.abs(got[f"{band.name}_rel"] - rel)) <= 2e-6, (label, band)
        if c == SINE:  # the closed form (tests/test_bands.py), and alpha is the largest band
            closed = 10 * np.log10(A**2 / 2 + SIGMA**2 / (FS / 2) * bins_in(8, 13) * DF)
            assert abs(10 * np.log10(np.mean(10 ** (got["alpha"] / 10))) - closed) < 0.5
            stacked = np.stack([got[b.name] for b in BANDS])
            assert np.all(np.argmax(stacked, axis=0) == [b.name for b in BANDS].index("alpha"))

    def quality(label: str) -> dict[str, np.ndarray]:
        columns, rows = select(server, db, f'SELECT * FROM "eeg_quality" WHERE "channel" = \'{label}\'')
        assert len(rows) == FRAMES and [r[0] for r in rows] == [t[0] for t in spectrum_times]
        return {col: np.array([r[columns.index(col)] for r in rows]) for col in QUALITY_FIELDS}

    for label in (LABELS[SINE], LABELS[GOOD1], LABELS[GOOD2]):
        q = quality(label)
        assert set(q["state"]) == {0} and set(q["flags"]) == {0}, label
    line, flat, clip = quality(LABELS[LINE]), quality(LABELS[FLAT]), quality(LABELS[CLIPPED])
    assert set(line["state"]) == {2} and set(line["flags"]) == {4}
    assert set(flat["state"]) == {2} and set(flat["flags"]) == {1} and set(flat["std"]) == {0.0}
    assert set(clip["state"]) == {2} and all(int(b) & 2 for b in clip["flags"])
    hop = NPERSEG - NOVERLAP
    windows = np.stack([x[k * hop : k * hop + NPERSEG].astype(np.float64) for k in range(FRAMES)])
    assert np.allclose(clip["rail_fraction"], (np.abs(windows[:, :, CLIPPED]) >= RAIL).mean(axis=1), atol=1e-6)
    assert np.allclose(quality(LABELS[GOOD1])["std"], windows[:, :, GOOD1].std(axis=1), atol=1e-3)


def test_a_chosen_band_beyond_the_streams_axis_exits_2_with_one_sentence(bridges, tmp_path: Path) -> None:
    name = unique("narrow")
    outlet = make_outlet(name, channels=2, rate=64.0)  # Nyquist 32 Hz
    process = bridges({
        "LSL_STREAM_NAME": name, "GRAFANA_URL": "", "INFLUXDB_URL": "", "SPOOL_DIR": str(tmp_path / "spool"),
        "SPECTRUM_NPERSEG": "64", "SPECTRUM_NOVERLAP": "32", "SPECTRUM_BANDS": "alpha:8-13,gamma:30-45",
    })
    assert process.proc is not None and process.proc.wait(60) == 2
    errors = [line for line in process.output().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "band gamma (30-45 Hz) is outside the frequency axis" in errors[0], process.output()
    assert "Traceback" not in process.output()
    del outlet
