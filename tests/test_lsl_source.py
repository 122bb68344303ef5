"""The LSL source against real outlets on loopback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest

from bridge.config import LslSettings
from bridge.sources.lsl import Chunk, LslSource, StreamRejected
from tests.fixtures_lsl import make_outlet, unique

DEADLINE = 30.0


def settings(name: str | None = None, type_: str | None = None, source_id: str | None = None, stale: float = 1.0) -> LslSettings:
    return LslSettings(name=name, type=type_, source_id=source_id, stale_sec=stale, buffer_sec=30)


def pull_until(source: LslSource, count: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    got = 0
    deadline = time.monotonic() + DEADLINE
    while got < count:
        assert time.monotonic() < deadline, f"only {got} of {count} samples arrived"
        chunk = source.pull(count - got)
        if chunk is not None:
            chunks.append(Chunk(chunk.samples.copy(), chunk.times.copy(), chunk.restart, chunk.gap_samples))
            got += len(chunk.times)
    return chunks


@pytest.mark.parametrize("by", ["name", "type", "source_id"])
def test_discovery_by_each_property(by: str) -> None:
    name, type_, sid = unique("name"), unique("type"), unique("sid")
    outlet = make_outlet(name, type_=type_, source_id=sid, labels=["Fz", "Cz", "Pz", "Oz"])
    query = {"name": settings(name=name), "type": settings(type_=type_), "source_id": settings(source_id=sid)}[by]
    source = LslSource(query, require_regular_rate=True, stop=threading.Event())
    try:
        description = source.connect()
        assert description is not None
        assert (description.name, description.type, description.source_id) == (name, type_, sid)
        assert description.labels == ("Fz", "Cz", "Pz", "Oz")
        assert description.srate == 250.0 and description.channel_count == 4
    finally:
        source.close()
        del outlet


def test_waits_for_a_late_stream() -> None:
    name = unique()
    waits: list[str] = []
    waited = threading.Event()

    def on_wait(message: str) -> None:
        waits.append(message)
        waited.set()

    source = LslSource(settings(name=name), require_regular_rate=True, stop=threading.Event(), on_wait=on_wait)
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.setdefault("d", source.connect()))
    thread.start()
    try:
        assert waited.wait(DEADLINE)
        outlet = make_outlet(name)
        thread.join(DEADLINE)
        assert not thread.is_alive()
        assert result["d"] is not None and result["d"].name == name  # type: ignore[union-attr]
        assert f"name='{name}'" in waits[0]
    finally:
        source.stop.set()
        thread.join(DEADLINE)
        source.close()


@pytest.mark.parametrize("fmt,dtype", [("int16", np.int16), ("int32", np.int32), ("double64", np.float64), ("float32", np.float32)])
def test_formats_arrive_exactly_with_unix_times(fmt: str, dtype: type) -> None:
    name = unique()
    outlet = make_outlet(name, channels=3, rate=100.0, fmt=fmt)
    source = LslSource(settings(name=name), require_regular_rate=True, stop=threading.Event())
    try:
        assert source.connect() is not None
        data = (np.arange(300).reshape(100, 3) * 7 - 500).astype(dtype)
        start = pylsl.local_clock()
        outlet.push_chunk(data, (start + np.arange(100) / 100.0).tolist())
        wall = time.time()
        chunks = pull_until(source, 100)
        got = np.concatenate([c.samples for c in chunks])
        assert got.dtype == dtype
        assert np.array_equal(got, data)
        times = np.concatenate([c.times for c in chunks])
        # local_clock -> Unix: the first sample was stamped "now" when pushed.
        assert abs(times[0] - wall) < 0.5
        assert np.allclose(np.diff(times), 0.01, atol=1e-3)
        assert chunks[0].restart and not any(c.restart for c in chunks[1:])
    finally:
        source.close()
        del outlet


def test_string_stream_is_rejected_with_a_sentence() -> None:
    name = unique()
    outlet = make_outlet(name, channels=1, rate=0.0, fmt="string", type_="Markers")
    source = LslSource(settings(name=name), require_regular_rate=True, stop=threading.Event())
    with pytest.raises(StreamRejected, match="carries strings \\(markers\\), not signal"):
        source.connect()
    del outlet


def test_irregular_rate_is_rejected_in_raw_mode_only() -> None:
    name = unique()
    outlet = make_outlet(name, channels=2, rate=0.0)
    raw = LslSource(settings(name=name), require_regular_rate=True, stop=threading.Event())
    with pytest.raises(StreamRejected, match="no nominal sampling rate"):
        raw.connect()
    pre = LslSource(settings(name=name), require_regular_rate=False, stop=threading.Event())
    try:
        assert pre.connect() is not None
    finally:
        pre.close()
        del outlet


def test_ambiguous_match_names_every_candidate() -> None:
    name = unique()
    a = make_outlet(name, source_id="amp-A")
    b = make_outlet(name, source_id="amp-B")
    source = LslSource(settings(name=name), require_regular_rate=True, stop=threading.Event())
    with pytest.raises(StreamRejected) as info:
        source.connect()
    message = str(info.value)
    assert "2 LSL streams match" in message and "amp-A" in message and "amp-B" in message
    assert "LSL_SOURCE_ID" in message
    del a, b


def test_lost_stream_is_detected_and_found_again() -> None:
    name = unique()
    outlet = make_outlet(name, channels=2, rate=100.0, source_id="")
    source = LslSource(settings(name=name, stale=1.0), require_regular_rate=True, stop=threading.Event())
    try:
        first = source.connect()
        assert first is not None
        outlet.push_chunk(np.ones((10, 2), np.float32))
        pull_until(source, 10)
        del outlet  # the outlet goes away for good
        deadline = time.monotonic() + DEADLINE
        while source.connected:
            assert time.monotonic() < deadline
            source.pull(1)
        outlet = make_outlet(name, channels=2, rate=100.0)
        second = source.reconnect()
        assert second is not None and second.uid != first.uid
        outlet.push_chunk(np.full((5, 2), 2.0, np.float32))
        chunks = pull_until(source, 5)
        assert chunks[0].restart
        assert np.all(np.concatenate([c.samples for c in chunks]) == 2.0)
    finally:
        source.close()
