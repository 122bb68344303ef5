"""The durable spool: order, recovery after a crash, size limit, quarantine, lock, destinations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bridge.archive.spool import LOCK_NAME, Destination, Spool, SpoolInUse, reason_file

HERE = Destination(url="http://influx.test:8086", api="v1", org="", bucket="eeg", measurements=("eeg_spectrum",))
THERE = Destination(url="http://influx.test:8086", api="v1", org="", bucket="other")


def open_spool(directory: Path, max_bytes: int = 10_000_000, destination: Destination | None = HERE) -> Spool:
    return Spool(directory, max_bytes, destination)


def test_oldest_first_and_remove(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(5):
        spool.append(f"m f={i} {i}\n".encode(), frames=i + 1)
    assert spool.pending_frames == 15
    first = spool.take(max_bytes=1, timeout=0)
    assert [s.read() for s in first] == [b"m f=0 0\n"]  # at least one, even over the limit
    both = spool.take(max_bytes=16, timeout=0)
    assert [s.read() for s in both] == [b"m f=0 0\n", b"m f=1 1\n"]
    spool.remove(both)
    assert spool.pending_frames == 12
    assert [s.read() for s in spool.take(10_000, timeout=0)] == [f"m f={i} {i}\n".encode() for i in (2, 3, 4)]


def test_reopen_recovers_segments_and_discards_torn_writes(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(b"a f=1 1\n", frames=1)
    spool.append(b"a f=2 2\n", frames=2)
    spool.unlock()
    (tmp_path / "0000000000000002-000001-0.tmp").write_bytes(b"a f=3")  # the crash hit mid-write
    again = open_spool(tmp_path)
    assert again.pending_frames == 3
    assert not list(tmp_path.glob("*.tmp"))
    again.append(b"a f=4 4\n", frames=1)
    assert [s.read() for s in again.take(10_000, timeout=0)] == [b"a f=1 1\n", b"a f=2 2\n", b"a f=4 4\n"]


def test_full_spool_drops_oldest_and_says_how_many(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=25)
    assert spool.append(b"x" * 10, frames=3) == 0
    assert spool.append(b"y" * 10, frames=4) == 0
    assert spool.append(b"z" * 10, frames=5) == 3  # 30 bytes > 25: the oldest 3 frames go
    assert [s.read() for s in spool.take(100, timeout=0)] == [b"y" * 10, b"z" * 10]
    assert spool.pending_bytes == 20


def test_a_segment_being_uploaded_is_never_dropped_for_space(tmp_path: Path) -> None:
    """Dropped and then accepted would count the same frames twice (dropped and sent)."""
    spool = open_spool(tmp_path, max_bytes=25)
    spool.append(b"x" * 10, frames=3)
    spool.append(b"y" * 10, frames=4)
    in_flight = spool.take(10, timeout=0)
    assert [s.read() for s in in_flight] == [b"x" * 10]
    assert spool.append(b"z" * 10, frames=5) == 4  # the next oldest goes instead
    assert [s.read() for s in spool.take(100, timeout=0)] == [b"x" * 10, b"z" * 10]


def test_quarantine_keeps_data_and_reason(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=1_000_000)
    spool.append(b"bad line\n", frames=2)
    (segment,) = spool.take(100, timeout=0)
    where = spool.quarantine(segment, "partial write: unable to parse 'bad line'")
    assert where.read_bytes().endswith(b"\nbad line\n")
    assert "unable to parse" in reason_file(where).read_text()
    spool.unlock()
    assert spool.empty and open_spool(tmp_path, max_bytes=1_000_000).empty


def test_every_segment_records_its_destination_and_length(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(b"m f=1 1\n", frames=1)
    (path,) = tmp_path.glob("*.lp")
    header, _, body = path.read_bytes().partition(b"\n")
    assert header.startswith(b"# eeg-bridge segment ")
    assert json.loads(header.removeprefix(b"# eeg-bridge segment ")) == {
        "url": "http://influx.test:8086", "api": "v1", "org": "", "bucket": "eeg",
        "measurements": ["eeg_spectrum"], "bytes": 8,
    }
    assert body == b"m f=1 1\n"


def test_take_groups_one_destination_and_skips_held_ones(tmp_path: Path) -> None:
    here = open_spool(tmp_path, destination=HERE)
    here.append(b"a f=1 1\n", frames=1)
    here.unlock()
    there = open_spool(tmp_path, destination=THERE)
    there.append(b"b f=2 2\n", frames=2)
    there.unlock()
    here = open_spool(tmp_path, destination=HERE)
    here.append(b"a f=3 3\n", frames=3)
    assert here.destinations() == {HERE: 4, THERE: 2}
    first = here.take(10_000, timeout=0)
    assert [(s.destination, s.read()) for s in first] == [(HERE, b"a f=1 1\n"), (HERE, b"a f=3 3\n")]
    here.remove(first)
    assert [s.read() for s in here.take(10_000, timeout=0)] == [b"b f=2 2\n"]
    assert here.take(10_000, timeout=0, skip={THERE.route}) == []
    assert here.frames_for(skip={THERE.route}) == 0 and here.pending_frames == 2


def test_files_that_are_not_segments_are_quarantined_with_a_reason(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(b"a f=1 1\n" * 100, frames=5)
    spool.append(b"a f=2 2\n", frames=1)
    spool.unlock()
    first = sorted(tmp_path.glob("*.lp"))[0]
    truncated = first.read_bytes()[:-50]
    first.write_bytes(truncated)  # a copy that was cut short
    (tmp_path / "0000000000000007-000003-0.lp").write_bytes(b"a f=9 9\n")  # written before the header existed
    (tmp_path / "segment-old.lp").write_bytes(b"a f=8 8\n")  # older naming
    again = open_spool(tmp_path)
    assert again.pending_frames == 1 and again.quarantined == 3
    reasons = {p.name: reason_file(p).read_text() for p in again.quarantine_dir.iterdir() if not p.name.endswith(".error.txt")}
    assert "is truncated or changed: 750 bytes of data, its header says 800" in reasons[first.name]
    assert "has no destination header" in reasons["0000000000000007-000003-0.lp"]
    assert "is not named like a spool segment" in reasons["segment-old.lp"]
    assert (again.quarantine_dir / first.name).read_bytes() == truncated  # kept as it was


def test_one_owner_per_spool(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolInUse) as busy:
        open_spool(tmp_path)
    assert busy.value.pid == os.getpid()
    assert "pytest" in busy.value.command or "python" in busy.value.command
    assert f"process {os.getpid()}" in busy.value.holder()
    assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid={os.getpid()}\n")
    spool.unlock()
    open_spool(tmp_path).unlock()  # free again


def test_a_spool_without_destination_can_be_read_but_not_written(tmp_path: Path) -> None:
    open_spool(tmp_path).append(b"a f=1 1\n", frames=1)  # released when collected
    reader = open_spool(tmp_path, destination=None)
    assert [s.read() for s in reader.take(100, timeout=0)] == [b"a f=1 1\n"]
    with pytest.raises(ValueError, match="without a destination"):
        reader.append(b"a f=2 2\n", frames=1)
