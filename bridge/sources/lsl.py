"""The LSL end of the bridge: find the stream, keep an inlet open, hand out timed chunks.

Stream loss is the complaint users repeat most about LSL tools, so it is never silent here:
a stream that raises ``LostError`` or stays quiet for ``stale_sec`` is dropped, re-resolved
with backoff, and every reconnection and timestamp gap is reported to the caller (who counts
and logs it) instead of being smoothed over.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pylsl
from tenacity import Retrying, retry_if_result, stop_never, wait_exponential_jitter

from bridge.config import LslSettings

log = logging.getLogger(__name__)

# liblsl's own INFO chatter drowns the bridge's log; keep its errors only. Must run before any
# other liblsl call, hence at import.
pylsl.set_config_content("[log]\nlevel = -2\n")

#: How long one resolve round listens for answers; also the window in which a second outlet
#: matching the same query must answer for the match to count as ambiguous. Not 0.5 s: that is
#: liblsl's MulticastMinRTT, when its unicast wave (to KnownPeers, localhost included) starts,
#: and a resolve timing out at that instant races it and blocks for UnicastMaxRTT (5 s) in
#: about one round in six (measured with liblsl 1.18). 1.0 s keeps clear of both waves.
RESOLVE_WINDOW_SEC = 1.0
PULL_TIMEOUT_SEC = 0.2


class StreamRejected(Exception):
    """The stream exists but the bridge cannot use it (strings, no rate, ambiguous)."""


@dataclass(frozen=True)
class StreamDescription:
    name: str
    type: str
    source_id: str
    hostname: str
    uid: str
    channel_count: int
    srate: float
    channel_format: str
    labels: tuple[str, ...]
    #: Frequency axis from ``<desc><frequencies>f0,f1,...</frequencies>`` (precomputed streams).
    frequencies: np.ndarray | None = field(default=None, compare=False)

    def who(self) -> str:
        return f"'{self.name}' (type {self.type or '-'}, host {self.hostname}, source_id {self.source_id or '-'})"


@dataclass(frozen=True)
class Chunk:
    """Samples (n x channels, valid until the next pull) with Unix-time seconds per sample."""

    samples: np.ndarray
    times: np.ndarray
    #: True for the first chunk after a (re)connection: no window may span it.
    restart: bool
    #: Samples the nominal rate says are missing just before this chunk (0 if none, or unknown).
    gap_samples: int


_FORMATS = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
    pylsl.cf_int8: "int8",
    pylsl.cf_int64: "int64",
}


def _xpath_literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise StreamRejected(f"stream selector {value!r} contains both quote characters; LSL cannot query it")


def build_predicate(name: str | None, type_: str | None = None, source_id: str | None = None,
                    hostname: str | None = None) -> str:
    parts = [
        f"{key}={_xpath_literal(value)}"
        for key, value in (("name", name), ("type", type_), ("source_id", source_id), ("hostname", hostname))
        if value
    ]
    return " and ".join(parts)


def _labels(info: pylsl.StreamInfo) -> tuple[str, ...]:
    labels: list[str] = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty() and len(labels) < info.channel_count():
        labels.append(channel.child_value("label"))
        channel = channel.next_sibling("channel")
    if len(labels) != info.channel_count():
        labels = [""] * info.channel_count()
    return tuple(labels)


def _frequencies(info: pylsl.StreamInfo) -> np.ndarray | None:
    text = info.desc().child_value("frequencies").strip()
    if not text:
        return None
    try:
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        log.warning("ignoring unreadable <frequencies> in the description of %s", info.name())
        return None


def describe(info: pylsl.StreamInfo) -> StreamDescription:
    return StreamDescription(
        name=info.name(),
        type=info.type(),
        source_id=info.source_id(),
        hostname=info.hostname(),
        uid=info.uid(),
        channel_count=info.channel_count(),
        srate=float(info.nominal_srate()),
        channel_format=_FORMATS.get(info.channel_format(), str(info.channel_format())),
        labels=_labels(info),
        frequencies=_frequencies(info),
    )


class LslSource:
    """One inlet on one stream, re-resolved whenever the stream is lost."""

    def __init__(
        self,
        settings: LslSettings,
        *,
        require_regular_rate: bool,
        stop: threading.Event,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.require_regular_rate = require_regular_rate
        self.stop = stop
        self.predicate = build_predicate(settings.name, settings.type, settings.source_id, settings.hostname)
        self._on_wait = on_wait or (lambda message: log.info("%s", message))
        self._inlet: pylsl.StreamInlet | None = None
        self._buffer: np.ndarray | None = None
        self.description: StreamDescription | None = None
        self._clock_offset = 0.0
        self._last_ts: float | None = None
        self._last_arrival = 0.0
        self._restart = True
        self._lost_uids: set[str] = set()

    # ---- connecting ---------------------------------------------------------------------------
    def _resolve_once(self) -> list[pylsl.StreamInfo]:
        found = pylsl.resolve_bypred(self.predicate, minimum=2, timeout=RESOLVE_WINDOW_SEC)
        live = [info for info in found if info.uid() not in self._lost_uids]
        return live or found

    def connect(self) -> StreamDescription | None:
        """Block until exactly one matching stream is found and opened; None when stopping."""
        started = time.monotonic()

        def waiting(found: list[pylsl.StreamInfo]) -> bool:
            if not found and not self.stop.is_set():
                self._on_wait(
                    f"waiting for an LSL stream matching {self.predicate} "
                    f"({time.monotonic() - started:.0f} s so far)"
                )
                return True
            return False

        retrying = Retrying(
            retry=retry_if_result(waiting),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.2),
            stop=stop_never,
            sleep=lambda seconds: self.stop.wait(seconds),
        )
        while True:
            found = retrying(self._resolve_once)
            if self.stop.is_set() or not found:
                return None
            if len(found) > 1:
                listing = "; ".join(describe(info).who() for info in found)
                raise StreamRejected(
                    f"{len(found)} LSL streams match {self.predicate}: {listing}. "
                    "Add LSL_SOURCE_ID (or a more specific name/type) to choose one."
                )
            try:
                return self._open(found[0])
            except (pylsl.util.LostError, pylsl.util.TimeoutError) as exc:
                # An outlet that was just closed can still answer a resolve; opening it then
                # fails. Not fatal: forget that one and resolve again.
                log.warning(
                    "LSL stream %s went away while being opened (%s); resolving again",
                    describe(found[0]).who(), exc,
                )
                self._lost_uids.add(found[0].uid())
                self.stop.wait(RESOLVE_WINDOW_SEC)

    def _open(self, info: pylsl.StreamInfo) -> StreamDescription:
        if info.channel_format() == pylsl.cf_string:
            raise StreamRejected(
                f"LSL stream {describe(info).who()} carries strings (markers), not signal; "
                "choose a numeric EEG stream."
            )
        if self.require_regular_rate and info.nominal_srate() <= 0:
            raise StreamRejected(
                f"LSL stream {describe(info).who()} has no nominal sampling rate (irregular), so no "
                "spectrum can be computed from it; use SPECTRUM_MODE=precomputed if it carries spectra."
            )
        # recover=False: liblsl's own silent recovery (an outlet restarted with the same
        # source_id) keeps the old dejitter model for up to ~50 samples, so the first samples
        # of the new outlet get times continuing the old ones and the real jump lands inside a
        # chunk, where no gap check sees it. Losing the inlet instead (LostError, at once) lets
        # the bridge re-resolve with a fresh inlet and report the gap.
        inlet = pylsl.StreamInlet(
            info,
            max_buflen=self.settings.buffer_sec,
            recover=False,
            processing_flags=pylsl.proc_clocksync | pylsl.proc_dejitter | pylsl.proc_monotonize,
            as_numpy=True,
        )
        full = inlet.info(timeout=5.0)
        inlet.open_stream(timeout=5.0)
        self._inlet = inlet
        self.description = describe(full)
        rows = max(64, int(self.description.srate) or 64)
        self._buffer = np.empty((rows, full.channel_count()), dtype=inlet.np_dtype)
        # Timestamps arrive on this machine's local_clock (proc_clocksync); one offset maps them
        # to Unix time. Estimated once per connection: a per-sample estimate would add jitter.
        self._clock_offset = time.time() - pylsl.local_clock()
        self._last_arrival = time.monotonic()
        self._restart = True
        log.info(
            "connected to %s: %d channels, %g Hz, %s",
            self.description.who(),
            self.description.channel_count,
            self.description.srate,
            self.description.channel_format,
        )
        return self.description

    def _drop_inlet(self, reason: str) -> None:
        if self.description is not None:
            if not self.stop.is_set():  # at shutdown the outlet often goes first: not news
                log.warning("lost LSL stream %s: %s; re-resolving", self.description.who(), reason)
            self._lost_uids.add(self.description.uid)
        if self._inlet is not None:
            try:
                self._inlet.close_stream()
            except Exception:  # noqa: BLE001 - a dying inlet may fail to close; it is discarded anyway
                pass
        self._inlet = None

    # ---- reading -------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._inlet is not None

    @property
    def seconds_since_last_sample(self) -> float:
        return time.monotonic() - self._last_arrival

    @property
    def clock_offset(self) -> float:
        return self._clock_offset

    def time_correction(self, timeout: float = 0.0) -> float | None:
        """liblsl's current sender-to-local clock correction (applied by proc_clocksync), for the
        ledger; None if no estimate within ``timeout`` (the first takes milliseconds, later ones
        are instant)."""
        if self._inlet is None:
            return None
        try:
            return float(self._inlet.time_correction(timeout=timeout))
        except (pylsl.util.TimeoutError, pylsl.util.LostError):
            return None

    def pull(self, min_samples: int = 1) -> Chunk | None:
        """Wait (briefly) for at least ``min_samples`` samples; None if nothing came yet.

        Asking liblsl for the samples the next window still needs lets it wait in C instead of
        waking Python for every small network chunk, which is both cheaper and no later.
        Raises nothing on stream loss: the inlet is dropped and :meth:`reconnect` must be called.
        """
        if self._inlet is None or self._buffer is None:
            return None
        max_samples = self._buffer.shape[0]
        try:
            data, stamps = self._inlet.pull_chunk(
                timeout=PULL_TIMEOUT_SEC,
                max_samples=max_samples,
                dest_obj=self._buffer,
                min_samples=max(1, min(min_samples, max_samples)),
            )
        except pylsl.util.LostError:
            self._drop_inlet("the outlet is gone")
            return None
        n = len(stamps)
        now = time.monotonic()
        if n == 0:
            if now - self._last_arrival > self.settings.stale_sec:
                self._drop_inlet(f"no sample for {now - self._last_arrival:.1f} s")
            return None
        self._last_arrival = now
        times = stamps + self._clock_offset
        gap = 0
        srate = self.description.srate if self.description else 0.0
        if self._last_ts is not None and srate > 0:
            delta = times[0] - self._last_ts
            # Across a reconnection every missing sample counts; mid-stream only a real jump does.
            if self._restart or delta > max(2.0 / srate, 0.005):
                gap = max(0, int(round(delta * srate)) - 1)
        self._last_ts = float(times[-1])
        chunk = Chunk(samples=data, times=times, restart=self._restart, gap_samples=gap)
        self._restart = False
        return chunk

    def reconnect(self) -> StreamDescription | None:
        """After a loss: resolve again (with backoff) and reopen; None when stopping."""
        if self._inlet is not None:
            self._drop_inlet("reconnecting")
        return self.connect()

    def close(self) -> None:
        if self._inlet is not None:
            try:
                self._inlet.close_stream()
            except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                pass
        self._inlet = None
