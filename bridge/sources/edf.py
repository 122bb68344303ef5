"""EDF/EDF+ and BDF/BDF+ recordings through pyedflib.

pyedflib (a thin layer over the C library EDFlib) rather than MNE: it reads any slice of any
signal straight from the file, so a one-hour 64-channel recording streams through the engine in
blocks instead of being loaded whole, and it costs one small wheel with numpy as its only
dependency, where MNE would bring scipy/matplotlib-sized imports and ~100 MB into a process
whose job is to stay small. MNE's EDF reader adds nothing the importer needs (no montage,
no filtering).

Times: the header's start date and time (EDF has no time zone: it is the local time where it
was recorded, read in ``--timezone``, default this machine's zone; EDF+ adds sub-seconds) plus
``sample index / sampling rate``. Annotations (EDF+/BDF+) become markers at start + onset.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import tzinfo
from pathlib import Path

import numpy as np

from bridge.pipeline import select_channels
from bridge.sources.lsl import StreamDescription, StreamRejected
from bridge.sources.recorded import (
    RecordedMarkers,
    RecordedStream,
    Recording,
    RecordingError,
    Segment,
    check_file,
    unix_ns,
)

log = logging.getLogger(__name__)


def _rates_sentence(path: Path, labels: list[str], rates: list[float]) -> str:
    groups: dict[float, list[str]] = {}
    for label, rate in zip(labels, rates):
        groups.setdefault(rate, []).append(label)
    parts = "; ".join(
        f"{rate:g} Hz: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''} ({len(names)})"
        for rate, names in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    )
    common = max(groups.items(), key=lambda kv: len(kv[1]))[1]
    return (
        f"{path}: the selected channels have different sampling rates ({parts}); a spectrum needs one rate: "
        f"choose channels of one rate with SPECTRUM_CHANNELS (e.g. SPECTRUM_CHANNELS={','.join(common[:3])},...)."
    )


def open_edf(path: Path, stream_name: str | None, channels: tuple[str, ...] | None, zone: tzinfo | None) -> Recording:
    """Open ``path``; the reader stays open for the blocks and closes when the recording is dropped."""
    import pyedflib  # noqa: PLC0415 - only the import command needs it

    check_file(path)
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as exc:
        raise RecordingError(f"{path}: not a readable EDF/BDF file ({str(exc).strip().rstrip('.')}).") from None
    kind = "BDF" if reader.filetype in (pyedflib.FILETYPE_BDF, pyedflib.FILETYPE_BDFPLUS) else "EDF"
    labels = [label.strip() for label in reader.getSignalLabels()]
    rates = [float(r) for r in reader.getSampleFrequencies()]
    name = stream_name or path.stem
    every = StreamDescription(name=name, type="EEG", source_id="", hostname="", uid=str(path), channel_count=len(labels),
                              srate=0.0, channel_format="float64", labels=tuple(labels))
    try:
        selection = select_channels(every, channels, len(labels))
    except StreamRejected as exc:  # a SPECTRUM_CHANNELS name the file lacks: already a sentence
        reader.close()
        raise RecordingError(f"{path}: {exc}") from None
    indices = list(range(len(labels))) if selection.indices is None else [int(i) for i in selection.indices]
    if not indices:
        reader.close()
        raise RecordingError(f"{path}: the file has no signal.")
    chosen_rates = [rates[i] for i in indices]
    if len(set(chosen_rates)) > 1:
        reader.close()
        raise RecordingError(_rates_sentence(path, [labels[i] for i in indices], chosen_rates))
    rate = chosen_rates[0]
    lengths = {int(reader.getNSamples()[i]) for i in indices}
    samples = min(lengths)
    start = reader.getStartdatetime()
    if zone is not None or start.tzinfo is None:
        start = start.replace(tzinfo=zone) if zone is not None else start.astimezone()
    t0 = start.timestamp()
    description = replace(every, srate=rate, channel_count=len(indices), labels=tuple(labels[i] for i in indices))

    def read(first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        # Channel-major, handed over transposed: the engine stores channel-major, so its copy is contiguous.
        block = np.empty((len(indices), stop - first), dtype=np.float64)
        for row, channel in enumerate(indices):
            block[row] = reader.readSignal(channel, first, stop - first)
        return block.T, t0 + np.arange(first, stop, dtype=np.float64) / rate

    stream = RecordedStream(description, [Segment(0, samples)] if samples else [], read, t0,
                            t0 + (samples - 1) / rate if samples else t0, channels_selected=True)
    if not samples:
        reader.close()
        raise RecordingError(f"{path}: the file holds no samples.")
    onsets, _, texts = reader.readAnnotations()
    markers = [RecordedMarkers(name, list(zip((str(t) for t in texts), (int(v) for v in unix_ns(t0 + np.asarray(onsets, dtype=np.float64))))))] if len(texts) else []
    zone_name = start.tzname() or start.strftime("%z")
    return Recording(path, kind, [stream], markers,
                     f"the header's start {start.isoformat()} ({zone_name}; EDF has no time zone) plus sample index / rate",
                     [], [f"'{labels[i]}' ({rates[i]:g} Hz): not selected" for i in range(len(labels)) if i not in indices],
                     close=reader.close)
