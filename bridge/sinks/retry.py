"""What a failed delivery means, and how long to wait before the next attempt.

The servers decide what is worth retrying (influxdb.md, "Retry policy that matches the
servers"): 429, 5xx, connection errors and timeouts are transient; 400/401/403/404/413/422 are
not, and retrying them only hides a configuration or data problem. Sinks translate their
transport's failures into :class:`TransientError` / :class:`PermanentError` with a message that
names the likely fix; the waits below are tenacity strategies so that every sink backs off the
same, honest way (exponential with jitter, or the server's ``Retry-After`` when it gives one).
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

from tenacity import RetryCallState
from tenacity.wait import wait_base, wait_exponential_jitter

RETRY_AFTER_CAP_SEC = 60.0


class DeliveryError(Exception):
    """A sink could not deliver; ``str()`` is one sentence safe to log (no secrets)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(DeliveryError):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """Retrying the same request cannot help; ``kind`` tells the sink what to do instead."""

    def __init__(self, message: str, *, kind: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.kind = kind  # "auth", "missing", "bad_data", "too_large", "retention"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_SEC)


def classify_status(status: int, *, retry_after: str | None, hints: dict[int, str], server_text: str = "") -> DeliveryError:
    """Map an HTTP status to the error a sink raises. ``hints`` hold the sink's wording per status."""
    detail = f" Server said: {server_text.strip()[:300]}" if server_text.strip() else ""
    if status == 429 or status >= 500:
        message = hints.get(status, f"server answered {status}; will retry.")
        if status == 429 and "cardinality" in server_text.lower():
            return PermanentError(message + detail, kind="bad_data", status=status)
        return TransientError(message + detail, status=status, retry_after=parse_retry_after(retry_after))
    kind = {400: "bad_data", 401: "auth", 403: "auth", 404: "missing", 413: "too_large", 422: "retention"}.get(
        status, "bad_data"
    )
    return PermanentError(hints.get(status, f"server answered {status}.") + detail, kind=kind, status=status)


@dataclass(frozen=True)
class Backoff:
    """A sink's retry timing.

    Transient failures back off exponentially with jitter between ``initial`` and ``maximum``,
    or wait what the server's ``Retry-After`` asks. Permanent failures (bad token, missing
    database) are not retried as such: the sink re-checks every ``recheck`` seconds, so that
    fixing the configuration on the server side is picked up without a restart, at a pace
    that cannot become a retry storm.
    """

    initial: float
    maximum: float
    recheck: float

    def wait(self) -> wait_base:
        return _wait_for_error(self)


class _wait_for_error(wait_base):  # noqa: N801 - tenacity's naming convention for strategies
    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.exponential = wait_exponential_jitter(multiplier=backoff.initial, max=backoff.maximum, jitter=backoff.initial)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, PermanentError):
            return self.backoff.recheck
        if isinstance(error, TransientError) and error.retry_after is not None:
            return error.retry_after
        return float(self.exponential(retry_state))
