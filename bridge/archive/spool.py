"""The archive's durable queue: append-only line-protocol segments on disk.

Every batch the InfluxDB sink encodes is written here *before* it is uploaded, and removed only
after the server accepted it. So the spool is the write-ahead log of the archive: an outage just
makes it longer, a crash leaves it on disk to be replayed at the next start (or by
``eeg-bridge replay``), and a SIGKILL can only lose the batch that was still being collected in
memory. Re-sending a segment after a crash between "accepted" and "removed" is harmless: the
same series and timestamp overwrite, they do not duplicate.

One spool, one owner: the directory is locked (``flock`` on ``eeg-bridge.lock``, which names the
holder's pid and command) for as long as a process uses it, because two writers would number
their segments from the same counter and each upload the other's data into its own database.

A segment is one file ``<seq>-<frames>-<newest sample ns>.lp`` written to a temporary name,
fsynced and renamed, so a reader never sees half a segment. Its first line is a line-protocol
comment recording where the data belongs and how long it is::

    # eeg-bridge segment {"api":"v1","bucket":"eeg","bytes":1234,"measurements":[...],"org":"","url":"http://..."}

so a restart or a replay with another destination can never send it somewhere else silently,
and a truncated copy is recognised. Anything in the directory that is not such a segment is
moved to ``quarantine/`` with a ``.error.txt`` reason beside it (never ignored silently), as are
segments the server rejected.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_SUFFIX = ".lp"
LOCK_NAME = "eeg-bridge.lock"
QUARANTINE = "quarantine"
HEADER_PREFIX = b"# eeg-bridge segment "
_MAX_HEADER = 64 * 1024

#: What identifies the place a segment is written to: (url, api, org, bucket).
Route = tuple[str, str, str, str]


@dataclass(frozen=True)
class Destination:
    """Where a segment's data belongs, as configured when it was recorded.

    ``url`` is empty when it was recorded with ``INFLUXDB_URL`` empty (spool only): such data
    goes to the server ``replay`` (or a later run) is given, into the recorded bucket.
    """

    url: str
    api: str
    org: str
    bucket: str
    measurements: tuple[str, ...] = ()

    @property
    def route(self) -> Route:
        return (self.url, self.api, self.org if self.api == "v2" else "", self.bucket)

    def on_server(self, url: str) -> bool:
        """Can a writer for ``url`` (with that server's credentials) deliver it?"""
        return self.url in ("", url)

    def describe(self) -> str:
        if self.api == "v2":
            where = f"bucket '{self.bucket}' in org '{self.org}'"
        else:
            db, _, rp = self.bucket.partition("/")
            where = f"database '{db}'" + (f" (retention policy '{rp}')" if rp else "")
        server = self.url or "the server given at upload (recorded with INFLUXDB_URL empty)"
        return f"{where} on {server} (API {self.api})"

    def to_header(self, body_bytes: int) -> bytes:
        fields = {
            "url": self.url, "api": self.api, "org": self.org, "bucket": self.bucket,
            "measurements": list(self.measurements), "bytes": body_bytes,
        }
        return HEADER_PREFIX + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode() + b"\n"


class SpoolInUse(Exception):
    """Another process holds the spool's lock."""

    def __init__(self, directory: Path, pid: int | None, command: str) -> None:
        super().__init__(f"{directory} is locked by process {pid}")
        self.directory, self.pid, self.command = directory, pid, command

    def holder(self) -> str:
        who = f"process {self.pid}" if self.pid else "another process"
        return f"{who} ({self.command})" if self.command else who


class SegmentDamaged(Exception):
    """A segment file that cannot be uploaded as it is; ``str()`` is the reason."""


@dataclass(frozen=True)
class Segment:
    path: Path
    seq: int
    frames: int
    #: Bytes of line protocol (without the header).
    size: int
    destination: Destination
    header_size: int
    #: Unix ns of the newest sample in the segment's frames (0 when unknown), for latency.
    newest_sample_ns: int = 0

    def read(self) -> bytes:
        """The line protocol to send (the header is ours, not the server's)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.header_size)
                body = handle.read()
        except FileNotFoundError:
            raise SegmentDamaged(f"{self.path.name} disappeared from the spool") from None
        if len(body) != self.size:
            raise SegmentDamaged(f"{self.path.name} changed on disk: {len(body)} bytes of data, its header says {self.size}")
        return body


def _parse(path: Path) -> Segment:
    """Read a segment's name and header, or raise SegmentDamaged saying why it is not one."""
    try:
        seq, frames, newest = (int(part) for part in path.name.removesuffix(_SUFFIX).split("-"))
        if not path.name.endswith(_SUFFIX) or min(seq, frames, newest) < 0:
            raise ValueError
    except ValueError:
        raise SegmentDamaged(
            f"'{path.name}' is not named like a spool segment (<seq>-<frames>-<newest ns>.lp)"
        ) from None
    try:
        with open(path, "rb") as handle:
            first = handle.readline(_MAX_HEADER)
        size = path.stat().st_size
    except OSError as exc:
        raise SegmentDamaged(f"'{path.name}' cannot be read: {exc.strerror or exc}") from None
    if not first.startswith(HEADER_PREFIX) or not first.endswith(b"\n"):
        raise SegmentDamaged(
            f"'{path.name}' has no destination header (written by an older eeg-bridge, or not a segment), "
            "so where it belongs is unknown"
        )
    try:
        fields = json.loads(first[len(HEADER_PREFIX):])
        destination = Destination(
            url=str(fields["url"]), api=str(fields["api"]), org=str(fields["org"]), bucket=str(fields["bucket"]),
            measurements=tuple(str(m) for m in fields.get("measurements", ())),
        )
        body_bytes = int(fields["bytes"])
    except (ValueError, KeyError, TypeError):
        raise SegmentDamaged(f"'{path.name}' has a damaged destination header") from None
    if size - len(first) != body_bytes:
        raise SegmentDamaged(
            f"'{path.name}' is truncated or changed: {size - len(first)} bytes of data, its header says {body_bytes}"
        )
    return Segment(path, seq, frames, body_bytes, destination, len(first), newest)


def reason_file(quarantined: Path) -> Path:
    """``x.lp`` -> ``x.error.txt``: why a file is in quarantine/."""
    return quarantined.with_name(quarantined.name.removesuffix(_SUFFIX) + ".error.txt")


def read_holder(lock_path: Path) -> tuple[int | None, str]:
    """(pid, command) recorded in a lock file; (None, "") when unreadable."""
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, ""
    fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    pid = fields.get("pid", "")
    return (int(pid) if pid.isdigit() else None), fields.get("command", "")


def _lock(directory: Path) -> IO[str]:
    """Hold the spool's lock for this process (released when the file closes, also on a crash)."""
    lock_path = directory / LOCK_NAME
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the spool's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolInUse(directory, *read_holder(lock_path)) from None
    handle.seek(0)
    handle.truncate()
    command = " ".join(getattr(sys, "orig_argv", sys.argv))
    handle.write(f"pid={os.getpid()}\ncommand={command}\n")
    handle.flush()
    return handle


class Spool:
    """Raises :class:`SpoolInUse` when another process holds ``directory``, OSError when unusable.

    ``destination`` is recorded in every segment this process appends (required to append).
    """

    def __init__(self, directory: Path, max_bytes: int, destination: Destination | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.destination = destination
        self.quarantine_dir = directory / QUARANTINE
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = _lock(directory)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # a write the crash interrupted: never acknowledged
        self._lock = threading.Condition()
        #: Files this process moved to quarantine/ (unparsable, damaged or rejected).
        self.quarantined = 0
        segments: list[Segment] = []
        for path in sorted(directory.iterdir()):
            if path.name == LOCK_NAME or path.is_dir():
                continue
            try:
                segments.append(_parse(path))
            except SegmentDamaged as why:
                self._move_to_quarantine(path, str(why))
        self._segments = sorted(segments, key=lambda s: s.seq)
        self._next_seq = self._segments[-1].seq + 1 if self._segments else 0
        self._in_flight: set[int] = set()
        self._closed = False

    # ---- producer side -------------------------------------------------------------------------
    def append(self, body: bytes, frames: int, newest_sample_ns: int = 0) -> int:
        """Make ``body`` durable; return how many older frames had to be dropped to fit it."""
        if self.destination is None:
            raise ValueError("this spool was opened without a destination, so it cannot record segments")
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        path = self.directory / f"{seq:016d}-{frames:06d}-{newest_sample_ns:d}{_SUFFIX}"
        header = self.destination.to_header(len(body))
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(header)
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self._fsync_dir()
        dropped = 0
        with self._lock:
            self._segments.append(Segment(path, seq, frames, len(body), self.destination, len(header), newest_sample_ns))
            while self._size_locked() > self.max_bytes:
                # The oldest that is not being uploaded right now: a segment in flight is either
                # accepted (counted as sent) or stays, never both dropped and sent.
                victim = next((s for s in self._segments[:-1] if s.seq not in self._in_flight), None)
                if victim is None:
                    break
                self._segments.remove(victim)
                victim.path.unlink(missing_ok=True)
                dropped += victim.frames
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
    def take(self, max_bytes: int, timeout: float, skip: Container[Route] = ()) -> list[Segment]:
        """Oldest segments for one destination up to ``max_bytes`` together (at least one),
        waiting up to ``timeout``; segments whose route is in ``skip`` are left where they are."""
        with self._lock:
            candidates = [s for s in self._segments if s.destination.route not in skip]
            if not candidates and not self._closed:
                self._lock.wait(timeout)
                candidates = [s for s in self._segments if s.destination.route not in skip]
            if not candidates:
                return []
            route = candidates[0].destination.route
            batch: list[Segment] = []
            total = 0
            for segment in candidates:
                if segment.destination.route != route:
                    continue
                if batch and total + segment.size > max_bytes:
                    break
                batch.append(segment)
                total += segment.size
            self._in_flight = {s.seq for s in batch}
            return batch

    def holds(self, segment: Segment) -> bool:
        with self._lock:
            return any(s.seq == segment.seq for s in self._segments)

    def remove(self, segments: list[Segment]) -> None:
        """The server has them: forget them."""
        done = {s.seq for s in segments}
        with self._lock:
            self._segments = [s for s in self._segments if s.seq not in done]
            self._in_flight -= done
        for segment in segments:
            segment.path.unlink(missing_ok=True)

    def quarantine(self, segment: Segment, reason: str) -> Path:
        """Move a segment aside with the reason, so the queue keeps moving."""
        with self._lock:
            self._segments = [s for s in self._segments if s.seq != segment.seq]
            self._in_flight.discard(segment.seq)
        return self._move_to_quarantine(segment.path, reason, f"{segment.frames} frames ({segment.path.name})")

    def _move_to_quarantine(self, path: Path, reason: str, what: str = "") -> Path:
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / path.name
        n = 1
        while target.exists():
            target = self.quarantine_dir / f"{path.name}.{n}"
            n += 1
        try:
            os.replace(path, target)
        except FileNotFoundError:
            log.error("archive spool: %s vanished before it could be quarantined (%s)", path, reason)
            return target
        reason_file(target).write_text(reason + "\n", encoding="utf-8")
        self.quarantined += 1
        log.error("archive spool: moved %s to %s: %s", what or path.name, self.quarantine_dir, reason)
        return target

    def close(self) -> None:
        """Wake a waiting consumer so it can notice shutdown."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def unlock(self) -> None:
        """Give the directory up (a process's exit does the same)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ---- accounting --------------------------------------------------------------------------
    def _size_locked(self) -> int:
        return sum(s.size for s in self._segments)

    def destinations(self) -> dict[Destination, int]:
        """Frames waiting per recorded destination."""
        with self._lock:
            frames: dict[Destination, int] = {}
            for s in self._segments:
                frames[s.destination] = frames.get(s.destination, 0) + s.frames
            return frames

    def frames_for(self, skip: Container[Route] = ()) -> int:
        """Frames waiting, leaving out the routes in ``skip``."""
        with self._lock:
            return sum(s.frames for s in self._segments if s.destination.route not in skip)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._size_locked()

    @property
    def pending_frames(self) -> int:
        return self.frames_for()

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._segments
