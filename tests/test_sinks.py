"""Request shapes and retry decisions of both sinks (respx for httpx; a local HTTP server for
influxdb-client, which speaks urllib3). What is *stored* is tested against a real InfluxDB in
test_archive.py; this file is about what goes on the wire and when it is (not) repeated."""

from __future__ import annotations

import base64
import http.server
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import respx
from pydantic import SecretStr
from tenacity import RetryCallState

from bridge.config import GrafanaSettings, InfluxSettings, TlsSettings
from bridge.frame import FrameLayout, SpectrumFrame
from bridge.observe.metrics import Metrics
from bridge.sinks.retry import Backoff, PermanentError, TransientError, classify_status, parse_retry_after
from bridge.sinks.grafana_live import GrafanaLiveSink
from bridge.sinks.influxdb import InfluxSink, make_writer
from bridge.archive.spool import Spool
from tests.bridge_process import local_http_server, wait_until

TLS = TlsSettings(ca_bundle=None, insecure=False)
LAYOUT = FrameLayout(stream="Sim EEG", channels=("Fz", "Oz"), frequencies=np.array([0.0, 2.0, 10.5]), srate=250.0)
T = 1_732_252_800_125_000_000


def frame(seq: int, values: list[list[float]] | None = None) -> SpectrumFrame:
    data = np.array(values if values is not None else [[1.5, -2.25, 30.0], [0.0, 4.125, -0.5]], dtype=np.float32)
    return SpectrumFrame(layout=LAYOUT, seq=seq, time_ns=T + seq * 500_000_000, newest_sample_ns=T, power_db=data)


def grafana_settings(**kw: object) -> GrafanaSettings:
    base = dict(url="http://grafana.test", token=SecretStr("glsa_test"), stream_id="eeg", push="http",
                admin_user=None, admin_password=None, timeout_sec=1.0, queue_frames=4, tls=TLS)
    base.update(kw)
    return GrafanaSettings(**base)  # type: ignore[arg-type]


def influx_settings(**kw: object) -> InfluxSettings:
    base = dict(url="http://influx.test", api="v1", token=None, org="lab", bucket="eeg/raw", username="writer",
                password=SecretStr("pw"), measurement="eeg_spectrum", schema="wide", batch_size=2,
                batch_interval_sec=0.2, timeout_sec=2.0, max_body_bytes=5_000_000, tls=TLS)
    base.update(kw)
    return InfluxSettings(**base)  # type: ignore[arg-type]


def expected_grafana_body(seq: int) -> bytes:
    ts = T + seq * 500_000_000
    return (f"Fz 000.00=1.500,002.00=-2.250,010.50=30.000 {ts}\n"
            f"Oz 000.00=0.000,002.00=4.125,010.50=-0.500 {ts}\n").encode()


def lines_of(bodies: list[bytes]) -> list[bytes]:
    """Every line the server received, in order, however the sink grouped them into requests
    (the uploader joins whatever segments are pending, so the grouping depends on timing)."""
    return [line + b"\n" for body in bodies for line in body.splitlines()]


def expected_influx_lines(seq: int) -> list[bytes]:
    ts = T + seq * 500_000_000
    return [
        f"eeg_spectrum,channel=Fz,stream_name=Sim\\ EEG 000.00=1.500,002.00=-2.250,010.50=30.000 {ts}\n".encode(),
        f"eeg_spectrum,channel=Oz,stream_name=Sim\\ EEG 000.00=0.000,002.00=4.125,010.50=-0.500 {ts}\n".encode(),
    ]


# ---- Grafana Live ---------------------------------------------------------------------------------


@respx.mock
def test_grafana_push_body_url_and_auth() -> None:
    route = respx.post("http://grafana.test/api/live/push/eeg").mock(return_value=httpx.Response(200))
    metrics = Metrics()
    sink = GrafanaLiveSink(grafana_settings(), metrics.sink("grafana"), token=SecretStr("glsa_test"))
    sink.start()
    try:
        sink.offer(frame(0))
        sink.offer(frame(1))
        wait_until(lambda: route.call_count == 2, 30)
    finally:
        sink.close(5)
    bodies = [call.request.content for call in route.calls]
    assert bodies == [expected_grafana_body(0), expected_grafana_body(1)]
    assert all(call.request.headers["Authorization"] == "Bearer glsa_test" for call in route.calls)
    assert metrics.value("eeg_bridge_sink_frames_sent_total", sink="grafana") == 2


@respx.mock
def test_grafana_failure_drops_the_frame_and_continues_with_fresh_ones() -> None:
    route = respx.post("http://grafana.test/api/live/push/eeg").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(200), httpx.Response(200)]
    )
    metrics = Metrics()
    sink = GrafanaLiveSink(grafana_settings(), metrics.sink("grafana"), token=SecretStr("glsa_test"))
    sink.start()
    try:
        sink.offer(frame(0))
        wait_until(lambda: route.call_count == 1, 30)
        sink.offer(frame(1))
        wait_until(lambda: route.call_count == 2, 30)
    finally:
        sink.close(5)
    assert route.calls[1].request.content == expected_grafana_body(1)  # frame 0 is not re-sent
    assert metrics.value("eeg_bridge_sink_frames_dropped_total", sink="grafana", reason="failed") == 1
    assert metrics.value("eeg_bridge_sink_retries_total", sink="grafana") == 1


@respx.mock
def test_grafana_401_names_the_fix_and_never_the_token() -> None:
    respx.post("http://grafana.test/api/live/push/eeg").mock(
        return_value=httpx.Response(401, json={"message": "Invalid API key", "messageId": "api-key.invalid"})
    )
    metrics = Metrics()
    sink = GrafanaLiveSink(grafana_settings(), metrics.sink("grafana"), token=SecretStr("glsa_test"))
    sink.start()
    try:
        sink.offer(frame(0))
        wait_until(lambda: sink.health.state == "failed", 30)
    finally:
        sink.close(5)
    assert "GRAFANA_TOKEN" in (sink.health.last_error or "")
    assert "glsa_test" not in (sink.health.last_error or "")


def test_grafana_queue_keeps_the_newest_frames() -> None:
    metrics = Metrics()
    sink = GrafanaLiveSink(grafana_settings(queue_frames=2), metrics.sink("grafana"), token=None)
    for seq in range(5):  # never started: nothing is sent
        sink.offer(frame(seq))
    assert [f.seq for f in sink._queue] == [3, 4]  # noqa: SLF001 - the queue is the point here
    assert metrics.value("eeg_bridge_sink_frames_dropped_total", sink="grafana", reason="stale") == 3


# ---- InfluxDB ----------------------------------------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", max_bytes=100_000_000)


def start_influx(settings: InfluxSettings, spool: Spool) -> tuple[InfluxSink, Metrics]:
    metrics = Metrics()
    sink = InfluxSink(settings, metrics, spool, writer=make_writer(settings))
    sink.start()
    return sink, metrics


@respx.mock
def test_influx_v1_request_shape(spool: Spool) -> None:
    route = respx.post("http://influx.test/write").mock(return_value=httpx.Response(204))
    sink, metrics = start_influx(influx_settings(), spool)
    try:
        sink.offer(frame(0))
        sink.offer(frame(1))
        wait_until(lambda: metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 2 and spool.empty, 30)
    finally:
        sink.close(5)
    requests = [call.request for call in route.calls]
    assert {tuple(sorted(r.url.params.items())) for r in requests} == {(("db", "eeg"), ("precision", "ns"), ("rp", "raw"))}
    assert {r.headers["Authorization"] for r in requests} == {"Basic " + base64.b64encode(b"writer:pw").decode()}
    assert lines_of([r.content for r in requests]) == expected_influx_lines(0) + expected_influx_lines(1)
    assert metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 2


@respx.mock
def test_influx_transient_errors_resend_the_same_batch(spool: Spool) -> None:
    answers = iter([httpx.ConnectError("refused"), httpx.Response(503, headers={"Retry-After": "0"})])

    def answer(request: httpx.Request) -> httpx.Response:
        reply = next(answers, httpx.Response(204))
        if isinstance(reply, Exception):
            raise reply
        return reply

    route = respx.post("http://influx.test/write").mock(side_effect=answer)
    sink, metrics = start_influx(influx_settings(batch_interval_sec=30.0), spool)  # one batch, by size
    try:
        sink.offer(frame(0))
        sink.offer(frame(1))
        wait_until(lambda: metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 2 and spool.empty, 60)
    finally:
        sink.close(5)
    bodies = [call.request.content for call in route.calls]
    batch = b"".join(expected_influx_lines(0) + expected_influx_lines(1))
    assert bodies == [batch] * 3  # the failed body, re-sent as it was until accepted
    assert metrics.value("eeg_bridge_sink_retries_total", sink="influxdb") == 2
    assert metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 2


@respx.mock
def test_influx_400_quarantines_and_moves_on(spool: Spool) -> None:
    bad = expected_influx_lines(0)[0]

    def answer(request: httpx.Request) -> httpx.Response:
        """Like a field type conflict: any body holding frame 0's first line is refused whole."""
        if bad in request.content:
            return httpx.Response(400, headers={"X-Influxdb-Error": "partial write: field type conflict"}, json={"error": "x"})
        return httpx.Response(204)

    route = respx.post("http://influx.test/write").mock(side_effect=answer)
    sink, metrics = start_influx(influx_settings(batch_interval_sec=30.0), spool)  # batches of 2, by size
    try:
        sink.offer(frame(0))
        sink.offer(frame(1))
        wait_until(lambda: metrics.value("eeg_bridge_sink_frames_dropped_total", sink="influxdb", reason="rejected") == 2
                   and spool.empty, 30)
        sink.offer(frame(2))
        sink.offer(frame(3))
        wait_until(lambda: metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 2 and spool.empty, 30)
    finally:
        sink.close(5)
    accepted = [c.request.content for c in route.calls if bad not in c.request.content]
    assert lines_of(accepted) == expected_influx_lines(2) + expected_influx_lines(3)
    quarantined = list(spool.quarantine_dir.glob("*.lp"))
    assert len(quarantined) == 1
    header, _, lines = quarantined[0].read_bytes().partition(b"\n")  # kept as spooled: header, then the lines
    assert header.startswith(b"# eeg-bridge segment ") and lines == b"".join(expected_influx_lines(0) + expected_influx_lines(1))
    assert "field type conflict" in quarantined[0].with_suffix(".error.txt").read_text()
    assert metrics.value("eeg_bridge_sink_frames_dropped_total", sink="influxdb", reason="rejected") == 2
    assert metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 2


@respx.mock
def test_influx_404_keeps_data_and_says_how_to_create_the_database(spool: Spool) -> None:
    route = respx.post("http://influx.test/write").mock(
        return_value=httpx.Response(404, json={"error": 'database not found: "eeg"'})
    )
    sink, _ = start_influx(influx_settings(batch_interval_sec=30.0), spool)  # one batch, by size
    try:
        sink.offer(frame(0))
        sink.offer(frame(1))
        wait_until(lambda: sink.health.state == "failed", 30)
    finally:
        sink.close(0)
    assert route.call_count == 1  # not retried (re-checked only every 30 s)
    assert "CREATE DATABASE" in (sink.health.last_error or "")
    assert spool.pending_frames == 2  # kept for later, not quarantined


@respx.mock
def test_influx_413_splits_the_body(spool: Spool) -> None:
    limit = 300

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413 if len(request.content) > limit else 204)

    route = respx.post("http://influx.test/write").mock(side_effect=answer)
    settings = influx_settings(batch_size=4, batch_interval_sec=30.0, max_body_bytes=10_000_000)  # one batch, by size
    sink, metrics = start_influx(settings, spool)
    try:
        for seq in range(4):
            sink.offer(frame(seq))
        wait_until(lambda: metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 4, 60)
    finally:
        sink.close(5)
    delivered = [c.request.content for c in route.calls if len(c.request.content) <= limit]
    assert lines_of(delivered) == [line for s in range(4) for line in expected_influx_lines(s)]
    assert metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 4


@respx.mock
def test_a_sink_that_is_down_does_not_hold_up_the_other(spool: Spool) -> None:
    respx.post("http://grafana.test/api/live/push/eeg").mock(side_effect=httpx.ConnectError("refused"))
    influx_route = respx.post("http://influx.test/write").mock(return_value=httpx.Response(204))
    metrics = Metrics()
    grafana = GrafanaLiveSink(grafana_settings(), metrics.sink("grafana"), token=None)
    batch_by_size = influx_settings(batch_interval_sec=30.0)
    influx = InfluxSink(batch_by_size, metrics, spool, writer=make_writer(batch_by_size))
    grafana.start()
    influx.start()
    try:
        for seq in range(10):
            grafana.offer(frame(seq))
            influx.offer(frame(seq))
        wait_until(lambda: metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 10, 30)
        wait_until(lambda: grafana.health.state == "retrying", 30)
    finally:
        grafana.close(5)
        influx.close(5)
    delivered = lines_of([call.request.content for call in influx_route.calls])
    assert delivered == [line for seq in range(10) for line in expected_influx_lines(seq)]
    assert metrics.value("eeg_bridge_sink_frames_sent_total", sink="grafana") == 0


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def v2_server() -> Iterator[str]:
    _Recorder.requests = []
    with local_http_server(_Recorder) as url:
        yield url


def test_influx_v2_goes_through_influxdb_client(spool: Spool, v2_server: str) -> None:
    settings = influx_settings(url=v2_server, api="v2", token=SecretStr("tok-123"), bucket="neuroscience", username=None)
    sink, metrics = start_influx(settings, spool)
    try:
        sink.offer(frame(0))
        sink.offer(frame(1))
        wait_until(lambda: metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 2, 30)
    finally:
        sink.close(5)
    requests = list(_Recorder.requests)
    assert {path.split("?", 1)[0] for path, _, _ in requests} == {"/api/v2/write"}
    assert {frozenset(path.split("?", 1)[1].split("&")) for path, _, _ in requests} == {
        frozenset({"org=lab", "bucket=neuroscience", "precision=ns"})
    }
    assert {headers["Authorization"] for _, headers, _ in requests} == {"Token tok-123"}
    assert lines_of([body for _, _, body in requests]) == expected_influx_lines(0) + expected_influx_lines(1)


# ---- the retry policy itself ---------------------------------------------------------------------


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("100000") == 60.0  # capped
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize("status,kind", [(400, "bad_data"), (401, "auth"), (403, "auth"), (404, "missing"), (413, "too_large"), (422, "retention")])
def test_statuses_that_are_never_retried(status: int, kind: str) -> None:
    error = classify_status(status, retry_after=None, hints={})
    assert isinstance(error, PermanentError) and error.kind == kind


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_statuses_that_are_retried(status: int) -> None:
    assert isinstance(classify_status(status, retry_after="2", hints={}), TransientError)


def test_cardinality_429_is_not_transient() -> None:
    error = classify_status(429, retry_after=None, hints={}, server_text="series cardinality exceeds quota")
    assert isinstance(error, PermanentError)


def _wait_after(error: Exception, attempt: int, backoff: Backoff) -> float:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return backoff.wait()(state)


def test_backoff_honours_retry_after_and_grows_otherwise() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0, recheck=30.0)
    assert _wait_after(TransientError("x", retry_after=7.0), 1, backoff) == 7.0
    assert _wait_after(PermanentError("x", kind="auth"), 1, backoff) == 30.0
    waits = [_wait_after(TransientError("x"), n, backoff) for n in range(1, 10)]
    assert all(0.5 <= w <= 8.0 for w in waits) and waits[-1] >= 4.0
