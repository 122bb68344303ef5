"""The straightforward pipeline the bridge is compared with, as its own process.

What someone would write first with the usual libraries: pull from LSL, per hop call
``scipy.signal.spectrogram`` on a rolling buffer (:class:`bench.naive.NaiveStft`), build
influxdb-client ``Point`` objects and hand them to its default *batching* ``write_api``, and POST
each frame to Grafana Live with httpx, built from ``Point.to_line_protocol()``. Frame times follow
the same convention as the bridge (window centre, Unix ns) so the same latency measurement
applies. LSL is read exactly like the bridge reads it (:mod:`bench.lslin`) except that it wakes
for every arriving chunk (``min_samples=1``), the usual low-latency loop.

One adaptation: Debian's InfluxDB 1.6.7 has no ``/api/v2/write``, so the client's single
``call_api`` entry is redirected to the 1.x ``/write?db=&precision=ns`` endpoint. Serialisation,
batching, threads and the HTTP stack stay the library's own.

    python -m bench.baseline --stream NAME --nperseg 256 --noverlap 128 \
        --grafana-url URL --token TOKEN --influx-url URL --db DB
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

import httpx
import numpy as np
from influxdb_client import InfluxDBClient, Point, WritePrecision

from bench.lslin import Inlet
from bench.naive import NaiveStft
from bridge.frame import channel_names
from bridge.codecs.line_protocol import bin_field_names


def _v1_write_path(client: InfluxDBClient, db: str) -> None:
    """Send the client's /api/v2/write requests to 1.x /write (see the module docstring)."""
    api = client.api_client
    original = api.call_api

    def call_api(resource_path: str, method: str, path_params: Any = None, query_params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if resource_path == "/api/v2/write":
            resource_path, query_params = "/write", [("db", db), ("precision", "ns")]
        return original(resource_path, method, path_params, query_params, *args, **kwargs)

    api.call_api = call_api


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--nperseg", type=int, default=256)
    parser.add_argument("--noverlap", type=int, default=128)
    parser.add_argument("--grafana-url", required=True)
    parser.add_argument("--stream-id", default="eeg")
    parser.add_argument("--token", default="")
    parser.add_argument("--influx-url", required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    inlet = Inlet(args.stream)
    names = channel_names(inlet.labels)
    fs = inlet.rate
    freqs = np.fft.rfftfreq(args.nperseg, 1.0 / fs)
    keys = bin_field_names(freqs)
    stft = NaiveStft(inlet.channels, fs, args.nperseg, args.noverlap)

    client = InfluxDBClient(url=args.influx_url, token="bench:bench", org="-")
    _v1_write_path(client, args.db)
    write_api = client.write_api()  # the default: batching, background thread
    http = httpx.Client(timeout=1.0, headers={"Authorization": f"Bearer {args.token}"})
    push_url = f"{args.grafana_url}/api/live/push/{args.stream_id}"
    print("connected", flush=True)

    frames = pushed = push_failed = 0
    while not stop.is_set():
        data, times = inlet.pull(1)
        if len(times) == 0:
            continue
        for centre, db in stft.push(data, times):
            t_ns = int(round(centre * 1e9))
            archive, live = [], []
            for name, row in zip(names, db.tolist()):
                point = Point("eeg_spectrum").tag("channel", name).tag("stream_name", args.stream).time(t_ns, WritePrecision.NS)
                view = Point(name).time(t_ns, WritePrecision.NS)
                for key, value in zip(keys, row):
                    point.field(key, value)
                    view.field(key, value)
                archive.append(point)
                live.append(view)
            write_api.write(bucket=args.db, org="-", record=archive)
            try:
                response = http.post(push_url, content="\n".join(p.to_line_protocol() for p in live).encode())
                pushed += response.status_code == 200
                push_failed += response.status_code != 200
            except httpx.HTTPError:
                push_failed += 1
            frames += 1
    write_api.close()  # flushes what the batcher still holds
    client.close()
    http.close()
    inlet.close()
    print(json.dumps({"frames": frames, "pushed": pushed, "push_failed": push_failed}), flush=True)


if __name__ == "__main__":
    main()
