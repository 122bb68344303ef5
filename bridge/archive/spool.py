"""The archive's durable queue: append-only line-protocol segments on disk.

Every batch the InfluxDB sink encodes is written here *before* it is uploaded, and removed only
after the server accepted it. So the spool is the write-ahead log of the archive: an outage just
makes it longer, a crash leaves it on disk to be replayed at the next start (or by
``eeg-bridge replay``), and a SIGKILL can only lose the batch that was still being collected in
memory. Re-sending a segment after a crash between "accepted" and "removed" is harmless: the
same series and timestamp overwrite, they do not duplicate.

A segment is one file ``<seq>-<frames>-<newest sample ns>.lp`` written to a temporary name, fsynced and renamed,
so a reader never sees half a segment. Quarantined segments (rejected by the server) move to
``quarantine/`` with the server's message beside them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SUFFIX = ".lp"


@dataclass(frozen=True)
class Segment:
    path: Path
    seq: int
    frames: int
    size: int
    #: Unix ns of the newest sample in the segment's frames (0 when unknown), for latency.
    newest_sample_ns: int = 0

    def read(self) -> bytes:
        return self.path.read_bytes()


def _parse(path: Path) -> Segment | None:
    try:
        seq, frames, newest = path.stem.split("-")
        return Segment(path=path, seq=int(seq), frames=int(frames), size=path.stat().st_size,
                       newest_sample_ns=int(newest))
    except (ValueError, OSError):
        return None


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.quarantine_dir = directory / "quarantine"
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # a write the crash interrupted: never acknowledged
        self._lock = threading.Condition()
        self._segments: list[Segment] = sorted(
            (s for s in map(_parse, directory.glob(f"*{_SUFFIX}")) if s is not None), key=lambda s: s.seq
        )
        self._next_seq = self._segments[-1].seq + 1 if self._segments else 0
        self._closed = False

    # ---- producer side -------------------------------------------------------------------------
    def append(self, body: bytes, frames: int, newest_sample_ns: int = 0) -> int:
        """Make ``body`` durable; return how many older frames had to be dropped to fit it."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        path = self.directory / f"{seq:016d}-{frames:06d}-{newest_sample_ns:d}{_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self._fsync_dir()
        dropped = 0
        with self._lock:
            self._segments.append(Segment(path, seq, frames, len(body), newest_sample_ns))
            while self._size_locked() > self.max_bytes and len(self._segments) > 1:
                oldest = self._segments.pop(0)
                oldest.path.unlink(missing_ok=True)
                dropped += oldest.frames
            self._lock.notify_all()
        if dropped:
            log.error(
                "archive spool is full (SPOOL_MAX_BYTES=%d): dropped the %d oldest frames to make room",
                self.max_bytes,
                dropped,
            )
        return dropped

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # ---- consumer side -------------------------------------------------------------------------
    def take(self, max_bytes: int, timeout: float) -> list[Segment]:
        """Oldest segments up to ``max_bytes`` together (at least one), waiting up to ``timeout``."""
        with self._lock:
            if not self._segments and not self._closed:
                self._lock.wait(timeout)
            batch: list[Segment] = []
            total = 0
            for segment in self._segments:
                if batch and total + segment.size > max_bytes:
                    break
                batch.append(segment)
                total += segment.size
            return batch

    def remove(self, segments: list[Segment]) -> None:
        """The server has them: forget them."""
        done = {s.seq for s in segments}
        with self._lock:
            self._segments = [s for s in self._segments if s.seq not in done]
        for segment in segments:
            segment.path.unlink(missing_ok=True)

    def quarantine(self, segment: Segment, reason: str) -> Path:
        """Move a rejected segment aside with the server's message, so the queue keeps moving."""
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / segment.path.name
        os.replace(segment.path, target)
        target.with_suffix(".error.txt").write_text(reason + "\n", encoding="utf-8")
        with self._lock:
            self._segments = [s for s in self._segments if s.seq != segment.seq]
        return target

    def close(self) -> None:
        """Wake a waiting consumer so it can notice shutdown."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    # ---- accounting --------------------------------------------------------------------------
    def _size_locked(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._size_locked()

    @property
    def pending_frames(self) -> int:
        with self._lock:
            return sum(s.frames for s in self._segments)

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._segments
