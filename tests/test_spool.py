"""The durable spool: order, recovery after a crash, size limit, quarantine."""

from __future__ import annotations

from pathlib import Path

from bridge.archive.spool import Spool


def test_oldest_first_and_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000_000)
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
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.append(b"a f=1 1\n", frames=1)
    spool.append(b"a f=2 2\n", frames=2)
    (tmp_path / "0000000000000002-000001-0.tmp").write_bytes(b"a f=3")  # the crash hit mid-write
    again = Spool(tmp_path, max_bytes=10_000_000)
    assert again.pending_frames == 3
    assert not list(tmp_path.glob("*.tmp"))
    again.append(b"a f=4 4\n", frames=1)
    assert [s.read() for s in again.take(10_000, timeout=0)] == [b"a f=1 1\n", b"a f=2 2\n", b"a f=4 4\n"]


def test_full_spool_drops_oldest_and_says_how_many(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=25)
    assert spool.append(b"x" * 10, frames=3) == 0
    assert spool.append(b"y" * 10, frames=4) == 0
    assert spool.append(b"z" * 10, frames=5) == 3  # 30 bytes > 25: the oldest 3 frames go
    assert [s.read() for s in spool.take(100, timeout=0)] == [b"y" * 10, b"z" * 10]
    assert spool.pending_bytes == 20


def test_quarantine_keeps_data_and_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000)
    spool.append(b"bad line\n", frames=2)
    (segment,) = spool.take(100, timeout=0)
    where = spool.quarantine(segment, "partial write: unable to parse 'bad line'")
    assert where.read_bytes() == b"bad line\n"
    assert "unable to parse" in where.with_suffix(".error.txt").read_text()
    assert spool.empty and Spool(tmp_path, max_bytes=1_000_000).empty
