"""The floor: a process that only pulls the stream from LSL into numpy and throws it away.

Whatever the bridge costs above this is the price of spectra and delivery; nothing written in
Python that reads the same stream can cost less. It wakes as often as the bridge does (it asks
liblsl for one hop of samples per pull, as the bridge does once its first window is full).

    python -m bench.floor --stream NAME --min-samples 128
"""

from __future__ import annotations

import argparse
import signal
import threading

from bench.lslin import Inlet


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--min-samples", type=int, default=128)
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    inlet = Inlet(args.stream)
    print("connected", flush=True)
    samples = 0
    while not stop.is_set():
        data, _times = inlet.pull(args.min_samples)
        if samples == 0 and len(_times):
            print("pulling", flush=True)
        samples += len(_times)
    inlet.close()
    print(f"samples {samples}", flush=True)


if __name__ == "__main__":
    main()
