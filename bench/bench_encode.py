"""Encoder speed against influxdb-client's own serializers (issue "Performance").

Run from the repository root: ``python -m bench.bench_encode [--repeats N] [--json PATH]``.

Every serializer starts from the same ``SpectrumFrame`` and must return the complete body as
bytes, so conversions it needs (``tolist``, building the DataFrame) are part of its cost: that
is what a sink would pay per frame. Only layout constants (field names) are prepared once.
Slow cases stop after a time budget (but at least 3 repeats) so the big long-schema Point case
does not run for minutes; the repeat count actually used is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import influxdb_client
import numpy as np

from bridge.frame import FrameLayout, SpectrumFrame, channel_names
from bridge.codecs.line_protocol import LineProtocolEncoder, bin_field_names

MEASUREMENT = "eeg_spectrum"
SIZES = ((64, 129), (256, 513))
SCHEMAS = ("wide", "long")
SERIALIZERS = ("ours", "point", "dataframe")
BUDGET_S = 8.0
MIN_REPEATS = 3
DEFAULT_JSON = Path(__file__).parent / "results" / "encode.json"

Encode = Callable[[SpectrumFrame], bytes]


def make_frames(channels: int, bins: int, count: int = 4) -> list[SpectrumFrame]:
    """Realistic dB spectra (mostly 2-3 integer digits, both signs) on a 125 ms cadence."""
    rng = np.random.default_rng(0)
    layout = FrameLayout(
        "SimEEG",
        channel_names([f"EEG{i:03d}" for i in range(channels)]),
        np.fft.rfftfreq(2 * (bins - 1), 1 / 500),
        500.0,
    )
    frames = []
    for i in range(count):
        time_ns = 1_732_252_800_125_000_000 + i * 125_000_000
        values = rng.normal(-10, 20, layout.shape).astype(np.float32)
        frames.append(SpectrumFrame(layout, i, time_ns, time_ns, values))
    return frames


def ours(schema: str, layout: FrameLayout) -> Encode:
    encoder = LineProtocolEncoder(schema=schema, measurement=MEASUREMENT)
    return lambda frame: encoder.encode(frame).body


def point(schema: str, layout: FrameLayout) -> Encode:
    from influxdb_client import Point, WritePrecision

    names = bin_field_names(layout.frequencies)

    def encode(frame: SpectrumFrame) -> bytes:
        points = []
        for channel, row in zip(layout.channels, frame.power_db.tolist()):
            if schema == "wide":
                p = Point(MEASUREMENT).tag("channel", channel).tag("stream_name", layout.stream)
                for name, value in zip(names, row):
                    p.field(name, value)
                points.append(p.time(frame.time_ns, WritePrecision.NS))
            else:
                for name, value in zip(names, row):
                    p = Point(MEASUREMENT).tag("channel", channel).tag("frequency_bin", name)
                    p.tag("stream_name", layout.stream).field("power", value)
                    points.append(p.time(frame.time_ns, WritePrecision.NS))
        return "".join(p.to_line_protocol(WritePrecision.NS) + "\n" for p in points).encode()

    return encode


def dataframe(schema: str, layout: FrameLayout) -> Encode:
    import pandas as pd
    from influxdb_client import WritePrecision
    from influxdb_client.client.write.dataframe_serializer import data_frame_to_list_of_points
    from influxdb_client.client.write_api import PointSettings

    names = list(bin_field_names(layout.frequencies))
    channels, bins = layout.shape
    tags = ["channel", "frequency_bin", "stream_name"] if schema == "long" else ["channel", "stream_name"]

    def encode(frame: SpectrumFrame) -> bytes:
        if schema == "wide":
            df = pd.DataFrame(frame.power_db, columns=names)
            df.insert(0, "channel", layout.channels)
        else:
            df = pd.DataFrame(
                {
                    "channel": np.repeat(layout.channels, bins),
                    "frequency_bin": np.tile(names, channels),
                    "power": frame.power_db.ravel(),
                }
            )
        df["stream_name"] = layout.stream
        df.index = pd.to_datetime(np.full(len(df), frame.time_ns), unit="ns", utc=True)
        lines = data_frame_to_list_of_points(
            df,
            PointSettings(),
            WritePrecision.NS,
            data_frame_measurement_name=MEASUREMENT,
            data_frame_tag_columns=tags,
        )
        return "".join(line + "\n" for line in lines).encode()

    return encode


FACTORIES: dict[str, Callable[[str, FrameLayout], Encode]] = {"ours": ours, "point": point, "dataframe": dataframe}


def measure(encode: Encode, frames: list[SpectrumFrame], repeats: int) -> tuple[list[float], list[float], bytes]:
    """Wall and CPU seconds per call; one warm-up call first (it builds our per-layout cache)."""
    body = encode(frames[0])
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    while len(walls) < repeats and (len(walls) < MIN_REPEATS or time.perf_counter() - started < BUDGET_S):
        frame = frames[len(walls) % len(frames)]
        wall, cpu = time.perf_counter(), time.thread_time()
        encode(frame)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus, body


def run(repeats: int = 50) -> list[dict]:
    results: list[dict] = []
    for channels, bins in SIZES:
        frames = make_frames(channels, bins)
        values = channels * bins
        for schema in SCHEMAS:
            rows: list[dict] = []
            for name in SERIALIZERS:
                walls, cpus, body = measure(FACTORIES[name](schema, frames[0].layout), frames, repeats)
                wall = statistics.median(walls)
                rows.append(
                    {
                        "channels": channels,
                        "bins": bins,
                        "schema": schema,
                        "serializer": name,
                        "repeats": len(walls),
                        "ms_per_frame": wall * 1e3,
                        "cpu_ms_per_frame": statistics.median(cpus) * 1e3,
                        "values_per_s": values / wall,
                        "bytes_per_frame": len(body),
                        "lines_per_frame": body.count(b"\n"),
                    }
                )
            point_ms = next(r["ms_per_frame"] for r in rows if r["serializer"] == "point")
            for row in rows:
                row["speedup_vs_point"] = point_ms / row["ms_per_frame"]
            results.extend(rows)
    return results


def table(results: list[dict]) -> str:
    header = (
        f"{'size':>9} {'schema':6} {'serializer':10} {'n':>3} {'ms/frame':>9} {'cpu ms':>9} "
        f"{'Mvalues/s':>10} {'KB/frame':>9} {'x Point':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['channels']:>4}x{r['bins']:<4} {r['schema']:6} {r['serializer']:10} {r['repeats']:>3} "
            f"{r['ms_per_frame']:9.3f} {r['cpu_ms_per_frame']:9.3f} {r['values_per_s'] / 1e6:10.2f} "
            f"{r['bytes_per_frame'] / 1e3:9.1f} {r['speedup_vs_point']:8.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    results = run(args.repeats)
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "influxdb_client": influxdb_client.__version__,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
