"""Tests of the Grafana Live stand-in itself, through real HTTP and WebSocket connections.

The bridge's tests trust whatever the stand-in answers, so each test pins one behaviour of
/work/shared/reference/grafana-live.md (or of Grafana's source, where the reference is silent).
Nothing sleeps to synchronise: tests wait on the stand-in's own records with generous deadlines.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection, connect

from tests.fixtures_grafana import (
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    ADMIN_USER,
    EDITOR_TOKEN,
    EXPIRED_TOKEN,
    REVOKED_TOKEN,
    VIEWER_TOKEN,
    GrafanaLiveFactory,
)
from tests.grafana_standin import (
    GrafanaLiveStandIn,
    LineProtocolError,
    LiveFrame,
    WsConnectionRecord,
    live_channel,
    parse_line_protocol,
)

FZ = live_channel("eeg", "Fz")
# Short WebSocket timings so keep-alive tests take about a second, with slack for a loaded machine.
PING_INTERVAL_S = 0.5
PONG_TIMEOUT_S = 1.5


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


EDITOR = bearer(EDITOR_TOKEN)


def push(
    standin: GrafanaLiveStandIn,
    body: bytes,
    headers: dict[str, str] = EDITOR,
    params: dict[str, str] | None = None,
    stream_id: str = "eeg",
) -> httpx.Response:
    return httpx.post(standin.push_url(stream_id), content=body, headers=headers, params=params, timeout=10)


def last_fz_frame(standin: GrafanaLiveStandIn) -> LiveFrame:
    frame = standin.last_frame(FZ)
    assert frame is not None, "nothing published on Fz"
    return frame


def only_connection(standin: GrafanaLiveStandIn) -> WsConnectionRecord:
    (record,) = standin.ws_connections()
    return record


@pytest.fixture
def keepalive_live(grafana_live_factory: GrafanaLiveFactory) -> GrafanaLiveStandIn:
    return grafana_live_factory(ws_ping_interval=PING_INTERVAL_S, ws_pong_timeout=PONG_TIMEOUT_S)


@pytest.fixture
def admin_ws(grafana_live: GrafanaLiveStandIn) -> Iterator[ClientConnection]:
    with connect(grafana_live.ws_push_url(), additional_headers=bearer(ADMIN_TOKEN), open_timeout=10) as ws:
        yield ws


class SilentWebSocket:
    """A push client that does the handshake by hand and never reads again, so never answers a ping."""

    def __init__(self, standin: GrafanaLiveStandIn) -> None:
        self.sock = socket.create_connection(("127.0.0.1", standin.port), timeout=10)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            self.sock.sendall(
                (
                    f"GET /api/live/push/eeg HTTP/1.1\r\nHost: 127.0.0.1:{standin.port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
                ).encode()
            )
            head = b""
            while not head.endswith(b"\r\n\r\n"):  # byte by byte: leave any ping frame unread
                head += self.sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101 "), head
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str) -> None:
        self.sock.sendall(Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[]))

    def drain_until_closed(self) -> None:
        """Read until the server's end of the connection is gone (EOF or reset)."""
        try:
            while self.sock.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass


@pytest.fixture
def silent_ws(keepalive_live: GrafanaLiveStandIn) -> Iterator[SilentWebSocket]:
    client = SilentWebSocket(keepalive_live)
    try:
        yield client
    finally:
        client.close()


# --- HTTP push: authentication and permission -------------------------------------------------------


def test_no_credentials_is_401_unauthorized(grafana_live: GrafanaLiveStandIn) -> None:
    response = push(grafana_live, b"Fz a=1 1", headers={})
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}
    assert grafana_live.frames_published() == {}


@pytest.mark.parametrize(
    ("headers", "status", "message_id"),
    [
        (bearer(EDITOR_TOKEN), 200, None),
        (bearer(ADMIN_TOKEN), 200, None),
        (basic("api_key", EDITOR_TOKEN), 200, None),
        (basic(ADMIN_USER, ADMIN_PASSWORD), 200, None),
        (bearer("glsa_never_issued"), 401, "api-key.invalid"),
        (bearer(EXPIRED_TOKEN), 401, "api-key.expired"),
        (bearer(REVOKED_TOKEN), 401, "api-key.revoked"),
        (basic("api_key", EXPIRED_TOKEN), 401, "api-key.expired"),
        (basic(ADMIN_USER, "wrong"), 401, "password-auth.failed"),
        (bearer(VIEWER_TOKEN), 200, None),
    ],
    ids=[
        "editor", "admin", "basic-api-key", "basic-user", "unknown", "expired", "revoked",
        "basic-api-key-expired", "basic-wrong-password", "viewer-signed-in",
    ],
)
def test_http_push_auth_matrix(
    grafana_live: GrafanaLiveStandIn, headers: dict[str, str], status: int, message_id: str | None
) -> None:
    response = push(grafana_live, b"Fz a=1 1", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.content == b""
        assert grafana_live.frames_published() == {FZ: 1}
    else:
        assert grafana_live.frames_published() == {}
    if message_id is not None:
        assert response.json()["messageId"] == message_id


def test_a_stricter_deployment_can_refuse_viewers(grafana_live_factory: GrafanaLiveFactory) -> None:
    """Not Grafana's own behaviour (its push route needs a signed-in identity only), kept so the
    bridge's handling of a 403 on push stays tested."""
    strict = grafana_live_factory(require_live_push_permission=True)
    assert push(strict, b"Fz a=1 1", headers=bearer(VIEWER_TOKEN)).status_code == 403


def test_user_password_needs_basic_auth_enabled_but_api_key_does_not(
    grafana_live_factory: GrafanaLiveFactory,
) -> None:
    standin = grafana_live_factory(basic_auth_enabled=False)
    response = push(standin, b"Fz a=1 1", headers=basic(ADMIN_USER, ADMIN_PASSWORD))
    assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})
    assert push(standin, b"Fz a=1 1", headers=basic("api_key", EDITOR_TOKEN)).status_code == 200


def test_records_headers_body_and_receive_time(grafana_live: GrafanaLiveStandIn) -> None:
    before = time.time_ns()
    push(grafana_live, b"Fz a=1 1")
    after = time.time_ns()
    headers = grafana_live.last_request_headers()
    assert headers is not None
    assert (headers["authorization"], headers["content-length"]) == (f"Bearer {EDITOR_TOKEN}", "8")
    (record,) = grafana_live.requests()
    assert (record.method, record.target, record.body) == ("POST", "/api/live/push/eeg", b"Fz a=1 1")
    assert record.status == 200
    assert before <= record.received_ns <= after
    assert grafana_live.status_counts() == {200: 1}


# --- HTTP push: parsing, all or nothing -----------------------------------------------------------------

BAD_LINES = [
    "Fz a=NaN",
    "Fz a=Inf",
    "Fz a=-Inf",
    "Fz a=nan",
    "Fz a=1,b=+Inf",
    "Fz",
    "Fz a=",
    "Fz a=1 notatime",
    "Fz,t a=1",
    "Fz a=1i2",
    "Fz a=99999999999999999999i",
    "Fz a=-1u",
    "Fz a=1e999",
    'Fz a="unterminated',
    "garbage",
]


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("bad", BAD_LINES)
def test_one_bad_line_anywhere_is_500_with_empty_body_and_nothing_published(
    grafana_live: GrafanaLiveStandIn, bad: str, position: str
) -> None:
    good = ["Fz a=1 1", "Cz a=2 1"]
    lines = {"first": [bad, *good], "middle": [good[0], bad, good[1]], "last": [*good, bad]}[position]
    response = push(grafana_live, "\n".join(lines).encode())
    assert (response.status_code, response.content) == (500, b"")
    assert grafana_live.frames_published() == {}
    assert grafana_live.browser_rows(FZ) == []
    assert grafana_live.requests()[-1].error is not None


def test_gzip_body_is_not_decoded(grafana_live: GrafanaLiveStandIn) -> None:
    response = push(
        grafana_live, gzip.compress(b"Fz a=1 1\n"), headers={**EDITOR, "Content-Encoding": "gzip"}
    )
    assert (response.status_code, response.content) == (500, b"")
    assert grafana_live.frames_published() == {}


def test_millisecond_timestamp_is_read_as_nanoseconds_and_lands_in_1970(
    grafana_live: GrafanaLiveStandIn,
) -> None:
    assert push(grafana_live, b"Fz a=1 1732252800125").status_code == 200
    (time_ns,) = last_fz_frame(grafana_live).column("time")
    assert time_ns == 1732252800125
    assert datetime.datetime.fromtimestamp(time_ns / 1e9, datetime.UTC).year == 1970


def test_missing_timestamp_becomes_server_now(grafana_live: GrafanaLiveStandIn) -> None:
    before = time.time_ns()
    assert push(grafana_live, b"Fz a=1").status_code == 200
    after = time.time_ns()
    (time_ns,) = last_fz_frame(grafana_live).column("time")
    assert before <= time_ns <= after


def test_fields_are_sorted_lexicographically(grafana_live: GrafanaLiveStandIn) -> None:
    push(grafana_live, b"Fz 2.0=2,10.0=10,001.95=1.95 1")
    assert last_fz_frame(grafana_live).field_names == ("labels", "time", "001.95", "10.0", "2.0")


def test_lines_of_one_measurement_make_one_frame_with_a_row_each(grafana_live: GrafanaLiveStandIn) -> None:
    push(grafana_live, b"Fz,host=b,dc=x a=1 1\nFz a=2 2\nCz a=9 1\nFz,host=a a=3 3")
    assert grafana_live.frames_published() == {FZ: 1, live_channel("eeg", "Cz"): 1}
    frame = last_fz_frame(grafana_live)
    assert frame.row_count == 3
    assert frame.column("labels") == ("dc=x, host=b", "", "host=a")
    assert frame.column("time") == (1, 2, 3)
    assert frame.column("a") == (1.0, 2.0, 3.0)


def test_all_numbers_become_nullable_float64_and_string_nan_becomes_null(
    grafana_live: GrafanaLiveStandIn,
) -> None:
    push(grafana_live, b'Fz i=-1i,u=2u,f=3.5,b=true,s="x",n="NaN" 1')
    columns = {f.name: (f.type, f.nullable, f.values) for f in last_fz_frame(grafana_live).fields[2:]}
    assert columns == {
        "b": ("bool", True, (True,)),
        "f": ("float64", True, (3.5,)),
        "i": ("float64", True, (-1.0,)),
        "n": ("float64", True, (None,)),
        "s": ("string", True, ("x",)),
        "u": ("float64", True, (2.0,)),
    }


def test_fields_missing_from_a_line_are_null_and_type_clashes_follow_grafana(
    grafana_live: GrafanaLiveStandIn,
) -> None:
    push(grafana_live, b'Fz a=1,s="x" 1\nFz b=2,s=1.5 2\nFz a="y",s=1e6 3')
    frame = last_fz_frame(grafana_live)
    assert frame.column("a") == (1.0, None, None)  # a string into a float64 column is nulled
    assert frame.column("b") == (None, 2.0, None)
    assert frame.column("s") == ("x", "1.5", "1e+06")  # a number into a string column is stringified


def test_parser_escaping_and_syntax() -> None:
    (point, other) = parse_line_protocol(
        b"# comment\n\n  my\\ m\\,x,t\\ k=v\\=1,a=b f\\=k=1,s=\"q\\\"\\\\ ,=\" 5  \r\nm2 x=t,y=FALSE,z=-.5e1"
    )
    assert point.measurement == "my m,x"
    assert point.tags == (("a", "b"), ("t k", "v=1"))
    assert point.fields == (("f=k", 1.0), ("s", 'q"\\ ,='))
    assert point.time_ns == 5
    assert other.fields == (("x", True), ("y", False), ("z", -5.0))
    with pytest.raises(LineProtocolError, match="line 2"):
        parse_line_protocol(b"m a=1\nm a=NaN")


def test_empty_body_and_comment_only_body_publish_nothing(grafana_live: GrafanaLiveStandIn) -> None:
    assert push(grafana_live, b"").status_code == 200
    assert push(grafana_live, b"# nothing\n\n").status_code == 200
    assert grafana_live.frames_published() == {}


def test_chunked_body_over_a_kept_alive_connection(grafana_live: GrafanaLiveStandIn) -> None:
    with httpx.Client(headers=EDITOR, timeout=10) as client:
        for ts in (1, 2):
            response = client.post(grafana_live.push_url(), content=iter([b"Fz a=1 ", str(ts).encode()]))
            assert response.status_code == 200
    assert [row.time_ns for row in grafana_live.browser_rows(FZ)] == [1, 2]


def test_unknown_path_is_404(grafana_live: GrafanaLiveStandIn) -> None:
    response = httpx.post(f"{grafana_live.url}/api/live/push/eeg/extra", content=b"Fz a=1", headers=EDITOR)
    assert response.status_code == 404


# --- frame format ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["json", "influx", "labels"])
def test_unsupported_frame_format_is_400_and_nothing_published(
    grafana_live: GrafanaLiveStandIn, value: str
) -> None:
    response = push(grafana_live, b"Fz a=1 1", params={"gf_live_frame_format": value})
    assert (response.status_code, response.content) == (400, b"")
    assert grafana_live.frames_published() == {}


@pytest.mark.parametrize(
    "params", [{"gf_live_frame_format": "labels_column"}, {"gf_live_frame_format": ""}, {"precision": "ms"}]
)
def test_default_format_and_other_parameters_ignored(
    grafana_live: GrafanaLiveStandIn, params: dict[str, str]
) -> None:
    assert push(grafana_live, b"Fz a=1 1732252800125", params=params).status_code == 200
    frame = last_fz_frame(grafana_live)
    assert frame.field_names == ("labels", "time", "a")
    assert frame.column("time") == (1732252800125,)  # precision=ms changes nothing


@pytest.mark.parametrize("value", ["wide", "WIDE"])
def test_wide_format_one_single_row_frame_per_measurement_and_time(
    grafana_live: GrafanaLiveStandIn, value: str
) -> None:
    body = b"Fz,host=a v=1 10\nFz,host=b v=2 10\nFz v=3 20"
    response = push(grafana_live, body, params={"gf_live_frame_format": value})
    assert response.status_code == 200
    first, second = grafana_live.frames(FZ)
    assert [f.key for f in first.fields] == ["time", "v{host=a}", "v{host=b}"]
    assert [f.values for f in first.fields] == [(10,), (1.0,), (2.0,)]
    assert [f.key for f in second.fields] == ["time", "v"]
    assert grafana_live.last_frame(FZ) == second
    assert len(grafana_live.mismatches(FZ)) == 1  # the two frames differ in schema


# --- what the server keeps and what the browser sees ----------------------------------------------------


def test_server_keeps_only_the_last_frame_per_channel(grafana_live: GrafanaLiveStandIn) -> None:
    push(grafana_live, b"Fz a=1 1")
    push(grafana_live, b"Fz a=2 2")
    frame = last_fz_frame(grafana_live)
    assert frame.column("time") == (2,) and frame.column("a") == (2.0,)
    assert grafana_live.frames_published() == {FZ: 2}


def test_schema_change_is_a_mismatch_that_wipes_the_browser_buffer(grafana_live: GrafanaLiveStandIn) -> None:
    push(grafana_live, b"Fz a=1 1")
    push(grafana_live, b"Fz a=2 2")
    assert grafana_live.mismatches() == []
    assert [row.time_ns for row in grafana_live.browser_rows(FZ)] == [1, 2]

    push(grafana_live, b"Fz a=3,b=3 3")
    (mismatch,) = grafana_live.mismatches()
    assert mismatch.channel == FZ
    assert [name for name, *_ in mismatch.previous] == ["labels", "time", "a"]
    assert [name for name, *_ in mismatch.current] == ["labels", "time", "a", "b"]
    assert [row.time_ns for row in grafana_live.browser_rows(FZ)] == [3]

    push(grafana_live, b"Fz a=4,b=4 4")
    assert len(grafana_live.mismatches()) == 1
    assert [row.values for row in grafana_live.browser_rows(FZ)] == [
        {"labels": "", "a": 3.0, "b": 3.0},
        {"labels": "", "a": 4.0, "b": 4.0},
    ]


def test_browser_buffer_keeps_the_newest_rows(grafana_live_factory: GrafanaLiveFactory) -> None:
    standin = grafana_live_factory(browser_max_rows=3)
    for ts in range(1, 6):
        push(standin, f"Fz a={ts} {ts}".encode())
    assert [row.time_ns for row in standin.browser_rows(FZ)] == [3, 4, 5]


@pytest.mark.parametrize(
    ("stream_id", "measurement"),
    [("eeg.v1", "Fz"), ("eeg", "Fz.1"), ("eeg", "F\\ z"), ("eeg", "x" * (160 - len("stream/eeg/") + 1))],
    ids=["dot-in-stream", "dot-in-measurement", "space", "161-chars"],
)
def test_invalid_channel_is_accepted_but_no_browser_can_subscribe(
    grafana_live: GrafanaLiveStandIn, stream_id: str, measurement: str
) -> None:
    assert push(grafana_live, f"{measurement} a=1 1".encode(), stream_id=stream_id).status_code == 200
    (channel,) = grafana_live.frames_published()
    assert grafana_live.last_frame(channel) is not None
    assert channel in grafana_live.invalid_channels()
    assert grafana_live.browser_rows(channel) == []


def test_160_character_channel_is_valid(grafana_live: GrafanaLiveStandIn) -> None:
    measurement = "x" * (160 - len("stream/eeg/"))
    push(grafana_live, f"{measurement} a=1 1".encode())
    assert grafana_live.invalid_channels() == {}
    assert len(grafana_live.browser_rows(live_channel("eeg", measurement))) == 1


# --- WebSocket push ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [(bearer(EDITOR_TOKEN), 403), (bearer(VIEWER_TOKEN), 403), ({}, 401), (bearer(EXPIRED_TOKEN), 401)],
)
def test_websocket_needs_admin(
    grafana_live: GrafanaLiveStandIn, headers: dict[str, str], status: int
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(grafana_live.ws_push_url(), additional_headers=headers, open_timeout=10)
    assert refused.value.response.status_code == status
    assert grafana_live.ws_connections() == []


def test_plain_get_is_a_failed_upgrade_and_foreign_origin_is_refused(
    grafana_live: GrafanaLiveStandIn,
) -> None:
    assert httpx.get(grafana_live.push_url(), headers=bearer(ADMIN_TOKEN), timeout=10).status_code == 400
    with pytest.raises(InvalidStatus) as refused:
        connect(
            grafana_live.ws_push_url(),
            additional_headers=bearer(ADMIN_TOKEN),
            origin="http://elsewhere.example",  # type: ignore[arg-type]
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403


def test_websocket_push_publishes_each_message(
    grafana_live: GrafanaLiveStandIn, admin_ws: ClientConnection
) -> None:
    admin_ws.send("Fz a=1 1\nCz a=1 1")
    admin_ws.send(b"Fz a=2 2")
    grafana_live.wait_for(lambda: grafana_live.frames_published()[FZ] == 2, what="two Fz frames")
    assert [row.time_ns for row in grafana_live.browser_rows(FZ)] == [1, 2]
    assert [m.error for m in grafana_live.ws_messages()] == [None, None]
    assert grafana_live.requests()[-1].status == 101


def test_websocket_bad_message_is_skipped_and_connection_stays(
    grafana_live: GrafanaLiveStandIn, admin_ws: ClientConnection
) -> None:
    admin_ws.send("Fz a=1 1\nFz a=NaN 2")
    admin_ws.send("Fz a=3 3")
    grafana_live.wait_for(lambda: grafana_live.frames_published()[FZ] == 1, what="the good message")
    bad, good = grafana_live.ws_messages()
    assert bad.error is not None and good.error is None
    assert last_fz_frame(grafana_live).column("time") == (3,)
    assert only_connection(grafana_live).is_open


def test_websocket_unsupported_frame_format_skips_every_message(grafana_live: GrafanaLiveStandIn) -> None:
    url = grafana_live.ws_push_url() + "?gf_live_frame_format=json"
    with connect(url, additional_headers=bearer(ADMIN_TOKEN), open_timeout=10) as ws:
        ws.send("Fz a=1 1")
        (message,) = grafana_live.wait_for(grafana_live.ws_messages, what="the message")
    assert message.error is not None and "json" in message.error
    assert grafana_live.frames_published() == {}


def test_websocket_message_of_exactly_1_mib_is_accepted(
    grafana_live: GrafanaLiveStandIn, admin_ws: ClientConnection
) -> None:
    head = b"Fz a=1 1\n#"
    admin_ws.send(head + b"x" * ((1 << 20) - len(head)))
    grafana_live.wait_for(lambda: grafana_live.frames_published()[FZ] == 1, what="the 1 MiB message")
    assert only_connection(grafana_live).is_open


def test_websocket_message_over_1_mib_closes_the_connection(
    grafana_live: GrafanaLiveStandIn, admin_ws: ClientConnection
) -> None:
    admin_ws.send(b"#" * ((1 << 20) + 1))
    with pytest.raises(ConnectionClosedError) as closed:
        admin_ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    record = grafana_live.wait_for(
        lambda: not only_connection(grafana_live).is_open and only_connection(grafana_live)
    )
    assert (record.close_code, record.close_reason) == (1009, "message too big")
    assert grafana_live.ws_messages() == []


def test_client_that_answers_pings_stays_connected(keepalive_live: GrafanaLiveStandIn) -> None:
    with connect(
        keepalive_live.ws_push_url(),
        additional_headers=bearer(ADMIN_TOKEN),
        ping_interval=None,  # no pings of its own; pongs are still automatic
        open_timeout=10,
    ) as ws:
        record = keepalive_live.wait_for(
            lambda: only_connection(keepalive_live).pongs_received >= 4 and only_connection(keepalive_live),
            what="four answered pings",
        )
        assert record.is_open  # well past PONG_TIMEOUT_S since opening
        assert (record.closed_ns or time.time_ns()) - record.opened_ns > PONG_TIMEOUT_S * 1e9
        ws.send("Fz a=1 1")
        keepalive_live.wait_for(lambda: keepalive_live.frames_published()[FZ] == 1, what="a frame")


def test_client_that_never_answers_pings_is_dropped_even_while_sending(
    keepalive_live: GrafanaLiveStandIn, silent_ws: SilentWebSocket
) -> None:
    sent = 0
    while (before := only_connection(keepalive_live)).is_open:
        try:
            silent_ws.send(f"Fz a={sent} {sent + 1}")  # one data message per ping period
        except OSError:
            break
        sent += 1
        keepalive_live.wait_for(
            lambda: (now := only_connection(keepalive_live)).pings_sent > before.pings_sent
            or not now.is_open,
            what="the next ping or the drop",
        )
    record = only_connection(keepalive_live)
    assert record.close_reason == "pong timeout" and record.close_code is None
    assert record.pings_sent >= 1 and record.pongs_received == 0
    assert record.closed_ns - record.opened_ns >= PONG_TIMEOUT_S * 1e9  # type: ignore[operator]
    assert keepalive_live.frames_published()[FZ] >= 2  # traffic did not keep it alive
    silent_ws.drain_until_closed()


# --- fault modes ------------------------------------------------------------------------------------------


def test_down_refuses_connections_drops_websockets_and_comes_back_on_the_same_port(
    grafana_live: GrafanaLiveStandIn, admin_ws: ClientConnection
) -> None:
    url = grafana_live.push_url()
    with httpx.Client(headers=EDITOR, timeout=10) as client:
        assert client.post(url, content=b"Fz a=1 1").status_code == 200  # leaves a kept-alive connection
        grafana_live.set_mode("down")
        with pytest.raises(httpx.ConnectError):
            client.post(url, content=b"Fz a=2 2")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", grafana_live.port), timeout=10).close()
        assert only_connection(grafana_live).close_reason == "server down"
        with pytest.raises(ConnectionClosed):
            admin_ws.recv(timeout=10)

        grafana_live.set_mode("ok")
        assert grafana_live.push_url() == url
        assert client.post(url, content=b"Fz a=3 3").status_code == 200
    assert [row.time_ns for row in grafana_live.browser_rows(FZ)] == [1, 3]


def test_error_5xx_answers_503_with_retry_after_and_publishes_nothing(
    grafana_live: GrafanaLiveStandIn,
) -> None:
    grafana_live.set_mode("error_5xx", retry_after=7)
    response = push(grafana_live, b"Fz a=1 1")
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    assert grafana_live.frames_published() == {}
    assert grafana_live.requests()[-1].body == b"Fz a=1 1"  # received, just not served

    grafana_live.set_mode("error_5xx", status=502)
    response = push(grafana_live, b"Fz a=1 1")
    assert response.status_code == 502 and "Retry-After" not in response.headers
    with pytest.raises(InvalidStatus) as refused:
        connect(grafana_live.ws_push_url(), additional_headers=bearer(ADMIN_TOKEN), open_timeout=10)
    assert refused.value.response.status_code == 502


def post_in_background(standin: GrafanaLiveStandIn, outcome: list[object]) -> threading.Thread:
    def post() -> None:
        try:
            outcome.append(push(standin, b"Fz a=1 1").status_code)
        except httpx.TransportError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_hang_holds_the_request_until_the_mode_changes(grafana_live: GrafanaLiveStandIn) -> None:
    grafana_live.set_mode("hang")
    outcome: list[object] = []
    thread = post_in_background(grafana_live, outcome)
    try:
        grafana_live.wait_for(lambda: grafana_live.hung_requests == 1, what="the request to hang")
        assert outcome == [] and grafana_live.frames_published() == {}
        grafana_live.set_mode("ok")
        grafana_live.wait_for(lambda: outcome, what="the answer")
    finally:
        thread.join(10)
    assert outcome == [200]
    assert grafana_live.frames_published() == {FZ: 1}


def test_stop_is_not_blocked_by_a_hung_request(grafana_live_factory: GrafanaLiveFactory) -> None:
    standin = grafana_live_factory()
    standin.set_mode("hang")
    outcome: list[object] = []
    thread = post_in_background(standin, outcome)
    try:
        standin.wait_for(lambda: standin.hung_requests == 1, what="the request to hang")
        started = time.monotonic()
        standin.stop()
        assert time.monotonic() - started < 5
    finally:
        thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError)


def test_reset_resets_the_tcp_connection(grafana_live: GrafanaLiveStandIn) -> None:
    grafana_live.set_mode("reset")
    with socket.create_connection(("127.0.0.1", grafana_live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/live/push/eeg HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n"
            + f"Authorization: Bearer {EDITOR_TOKEN}\r\n\r\nFz a=1 1".encode()
        )
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    with pytest.raises(httpx.TransportError):
        push(grafana_live, b"Fz a=1 1")
    assert grafana_live.status_counts() == {None: 2}
    assert grafana_live.frames_published() == {}

    grafana_live.set_mode("ok")
    assert push(grafana_live, b"Fz a=1 1").status_code == 200


def test_wait_for_gives_up_at_its_deadline(grafana_live: GrafanaLiveStandIn) -> None:
    with pytest.raises(TimeoutError, match="never"):
        grafana_live.wait_for(lambda: False, timeout=0.2, what="never")


# --- as a process ----------------------------------------------------------------------------------------


def test_runs_as_a_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.grafana_standin", "--port", "0", "--token", "glsa_cli=Editor"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().rsplit(" ", 1)[-1].strip()
        response = httpx.post(
            f"{url}/api/live/push/eeg", content=b"Fz a=1 1", headers=bearer("glsa_cli"), timeout=10
        )
        assert response.status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "{200: 1}" in stderr


# ---- browser buffer, service accounts, dashboards (Grafana source paths in grafana_standin.py) -------

from tests.grafana_standin import CLIENT_CHANNEL_LIMIT, SA_ACCOUNT_EXISTS, SA_TOKEN_EXISTS, render_dashboard  # noqa: E402


def test_browser_buffer_trims_to_max_rows_then_to_the_time_span(grafana_live_factory: GrafanaLiveFactory) -> None:
    # StreamingDataFrame circPush: keep maxLength rows, then cut at the row closest to newest - maxDelta.
    standin = grafana_live_factory(browser_max_rows=8, browser_max_delta_ms=4500)
    body = "".join(f"Fz a={i} {i * 10**9}\n" for i in range(10)).encode()
    assert push(standin, body).status_code == 200
    # rows 2..9 survive maxLength; 9 s - 4.5 s = 4.5 s: closest row is 4 (tie goes to the older row)
    assert [r.time_ms for r in standin.browser_rows(FZ)] == [4000, 5000, 6000, 7000, 8000, 9000]


def test_browser_sees_millisecond_times(grafana_live: GrafanaLiveStandIn) -> None:
    assert push(grafana_live, b"Fz a=1 1000000000\nFz a=2 1000400000\n").status_code == 200
    rows = grafana_live.browser_rows(FZ)
    assert [r.time_ns for r in rows] == [1_000_000_000, 1_000_400_000]
    assert [r.time_ms for r in rows] == [1000, 1000]  # the nanos travel apart and are ignored


def test_provisioned_live_buffer_holds_the_window_at_31_frames_per_second(
    grafana_live_factory: GrafanaLiveFactory,
) -> None:
    board = json.loads((Path(__file__).resolve().parents[1] / "dashboards" / "eeg-live-spectrogram.json").read_text())
    detail = next(p for p in board["panels"] if p.get("title") == "$channel: live")
    window_ms = 120_000
    standin = grafana_live_factory(browser_max_rows=detail["maxDataPoints"], browser_max_delta_ms=window_ms)
    period_ns, count = 32_000_000, 130 * 1000 // 32  # 130 s at 1 kHz / hop 32
    for start in range(0, count, 500):
        body = "".join(f"Fz a=1 {k * period_ns}\n" for k in range(start, min(start + 500, count))).encode()
        assert push(standin, body).status_code == 200
    rows = standin.browser_rows(FZ)
    assert rows[-1].time_ms - rows[0].time_ms >= window_ms - period_ns // 10**6


def _sa(standin: GrafanaLiveStandIn, method: str, path: str, body: dict | None = None,
        headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, standin.url + path, json=body, timeout=10,
                         headers=headers or basic(ADMIN_USER, ADMIN_PASSWORD))


def test_service_account_api_status_codes_and_bodies(grafana_live: GrafanaLiveStandIn) -> None:
    created = _sa(grafana_live, "POST", "/api/serviceaccounts", {"name": "a", "role": "Editor"})
    assert created.status_code == 201 and created.json()["role"] == "Editor"
    again = _sa(grafana_live, "POST", "/api/serviceaccounts", {"name": "a", "role": "Editor"})
    assert (again.status_code, again.json()) == (
        400, {"message": SA_ACCOUNT_EXISTS[1], "messageId": "serviceaccounts.ErrAlreadyExists", "statusCode": 400}
    )
    other = _sa(grafana_live, "POST", "/api/serviceaccounts", {"name": "b", "role": "Viewer"}).json()
    first = _sa(grafana_live, "POST", f"/api/serviceaccounts/{created.json()['id']}/tokens", {"name": "t", "secondsToLive": 60})
    assert first.status_code == 200 and first.json()["key"].startswith("glsa_")
    # token names are unique in the organisation, not per account
    clash = _sa(grafana_live, "POST", f"/api/serviceaccounts/{other['id']}/tokens", {"name": "t"})
    assert (clash.status_code, clash.json()["messageId"]) == (400, SA_TOKEN_EXISTS[0])
    negative = _sa(grafana_live, "POST", f"/api/serviceaccounts/{other['id']}/tokens", {"name": "u", "secondsToLive": -1})
    assert (negative.status_code, negative.json()["messageId"]) == (400, "serviceaccounts.ErrInvalidInput")
    listed = _sa(grafana_live, "GET", f"/api/serviceaccounts/{created.json()['id']}/tokens").json()
    assert [(t["name"], t["hasExpired"]) for t in listed] == [("t", False)] and listed[0]["expiration"]
    assert push(grafana_live, b"Fz a=1 1", headers=bearer(first.json()["key"])).status_code == 200
    gone = _sa(grafana_live, "DELETE", f"/api/serviceaccounts/{created.json()['id']}/tokens/{listed[0]['id']}")
    assert gone.status_code == 200
    assert push(grafana_live, b"Fz a=1 1", headers=bearer(first.json()["key"])).status_code == 401
    assert _sa(grafana_live, "DELETE", f"/api/serviceaccounts/{created.json()['id']}/tokens/999").status_code == 404
    assert _sa(grafana_live, "GET", "/api/serviceaccounts/search", headers=bearer(EDITOR_TOKEN)).status_code == 403


def _board(variables: list[dict], panels: list[dict]) -> dict:
    return {"uid": "x", "templating": {"list": variables}, "panels": panels}


def _live_panel(channel: str, title: str = "p") -> dict:
    return {"type": "heatmap", "title": title, "datasource": {"uid": "grafana"}, "targets": [{"channel": channel}]}


def test_a_client_subscribes_to_at_most_128_channels_one_of_them_the_dashboard_watcher() -> None:
    # dashboardWatcher.ts holds grafana/dashboard/uid/<uid>: panels get 127 of the 128.
    board = _board([], [_live_panel(f"stream/eeg/c{i}", f"c{i}") for i in range(130)])
    view = render_dashboard(board)
    assert [p.title for p in view.panels if not p.shows_data] == ["c127", "c128", "c129"]
    assert CLIENT_CHANNEL_LIMIT == 128


def test_rows_repeated_over_a_failing_query_variable_show_no_data() -> None:
    variable = {"name": "channel", "type": "query", "query": "SHOW TAG VALUES", "multi": True, "includeAll": True,
                "current": {"value": ["$__all"]}}
    panels = [{"type": "row", "repeat": "channel"}, _live_panel("stream/eeg/$channel", "$channel")]
    (placeholder,) = render_dashboard(_board([variable], panels), query_variable=lambda v: None).panels
    assert placeholder.channels == ("stream/eeg/",) and not placeholder.shows_data
    view = render_dashboard(_board([variable], panels), query_variable=lambda v: ["Fz", "Cz"])
    assert [p.channels for p in view.panels] == [("stream/eeg/Fz",), ("stream/eeg/Cz",)]
    custom = {"name": "channel", "type": "custom", "query": "Fz,Cz,Pz", "multi": True, "current": {"value": ["Cz"]}}
    assert [p.title for p in render_dashboard(_board([custom], panels)).panels] == ["Cz"]


def test_saving_a_locked_provisioned_dashboard_is_refused(grafana_live: GrafanaLiveStandIn) -> None:
    grafana_live.provision_dashboard({"uid": "d", "title": "t"}, allow_ui_updates=False)
    saved = _sa(grafana_live, "POST", "/api/dashboards/db", {"dashboard": {"uid": "d", "title": "u"}, "overwrite": True},
                headers=bearer(EDITOR_TOKEN))
    assert (saved.status_code, saved.json()) == (400, {"message": "Cannot save provisioned dashboard"})
    viewer = _sa(grafana_live, "POST", "/api/dashboards/db", {"dashboard": {"uid": "e"}}, headers=bearer(VIEWER_TOKEN))
    assert viewer.status_code == 403


# ---- anonymous access, dashboard folders, the provisioner, the dashboard watcher, the home page ----


def test_with_anonymous_access_a_failed_or_missing_token_pushes_as_an_anonymous_viewer(
    grafana_live_factory: GrafanaLiveFactory,
) -> None:
    """authnimpl/service.go falls through to the anonymous client; reqSignedIn passes it; ReqOrgAdmin does not."""
    standin = grafana_live_factory(anonymous_enabled=True)
    for headers in ({}, bearer(EXPIRED_TOKEN), bearer("glsa_nobody_knows_this_one")):
        assert httpx.post(standin.push_url(), content=b"Fz a=1 1", headers=headers, timeout=10).status_code == 200
    assert [r.identity for r in standin.requests()] == ["anonymous"] * 3
    assert standin.frames_published()[FZ] == 3
    with pytest.raises(InvalidStatus) as refused:
        connect(standin.ws_push_url(), additional_headers=bearer(EXPIRED_TOKEN), open_timeout=10)
    assert refused.value.response.status_code == 403
    wrong = httpx.get(f"{standin.url}/api/serviceaccounts/search", auth=(ADMIN_USER, "wrong"), timeout=10)
    assert wrong.status_code == 403


def test_without_anonymous_access_the_same_requests_are_401(grafana_live: GrafanaLiveStandIn) -> None:
    for headers in ({}, bearer(EXPIRED_TOKEN)):
        assert httpx.post(grafana_live.push_url(), content=b"Fz a=1 1", headers=headers, timeout=10).status_code == 401
    wrong = httpx.get(f"{grafana_live.url}/api/serviceaccounts/search", auth=(ADMIN_USER, "wrong"), timeout=10)
    assert wrong.status_code == 401
    assert grafana_live.frames_published() == {}


def _live_template() -> dict:
    return {"uid": "live", "title": "Live", "templating": {"list": [{"name": "channel", "type": "custom", "query": ""}]},
            "panels": []}


def test_a_save_without_folder_uid_moves_a_provisioned_dashboard_and_the_provisioner_puts_the_file_back(
    grafana_live: GrafanaLiveStandIn,
) -> None:
    """postDashboard/GetDashboardModel take the folder from the command; file_reader.go's "fix empty
    folder_uid" re-saves the file into the provider's folder. Each save is one reload event."""
    grafana_live.provision_dashboard(_live_template(), allow_ui_updates=True, folder_uid="f1")
    edited = {**_live_template(), "templating": {"list": [{"name": "channel", "type": "custom", "query": "Fz"}]}}
    saved = httpx.post(f"{grafana_live.url}/api/dashboards/db", headers=bearer(EDITOR_TOKEN), timeout=10,
                       json={"dashboard": edited, "overwrite": True})
    assert saved.json()["version"] == 2
    assert grafana_live.dashboard_folder("live") == ""
    assert grafana_live.run_provisioner() == ["live"]
    assert grafana_live.dashboard_folder("live") == "f1"
    assert grafana_live.dashboard("live")["templating"]["list"][0]["query"] == ""  # the edit is gone
    assert grafana_live.dashboard_reloads("live") == 2  # the API save and the provisioner's
    assert grafana_live.run_provisioner() == []  # back in its folder: nothing more to fix


def test_an_editor_may_be_refused_the_root_folder(grafana_live_factory: GrafanaLiveFactory) -> None:
    standin = grafana_live_factory(editors_may_create_in_root=False)
    post = {"dashboard": _live_template(), "overwrite": True}
    root = httpx.post(f"{standin.url}/api/dashboards/db", headers=bearer(EDITOR_TOKEN), json=post, timeout=10)
    folder = httpx.post(f"{standin.url}/api/dashboards/db", headers=bearer(EDITOR_TOKEN), timeout=10,
                        json={**post, "folderUid": "f1"})
    assert (root.status_code, folder.status_code) == (403, 200)
    assert standin.dashboard_folder("live") == "f1" and standin.dashboard_reloads("live") == 1


def test_the_home_dashboard_is_read_from_disk_on_every_request(
    grafana_live_factory: GrafanaLiveFactory, tmp_path: Path
) -> None:
    """GetHomeDashboard reads default_home_dashboard_path; an API save under the same uid changes nothing."""
    home = tmp_path / "home.json"
    home.write_text(json.dumps({**_live_template(), "title": "From the file"}), encoding="utf-8")
    standin = grafana_live_factory(home_dashboard_path=str(home))
    httpx.post(f"{standin.url}/api/dashboards/db", headers=bearer(EDITOR_TOKEN), timeout=10,
               json={"dashboard": {**_live_template(), "title": "Saved"}, "folderUid": "f1", "overwrite": True})

    def title() -> str:
        return httpx.get(f"{standin.url}/api/dashboards/home", headers=bearer(VIEWER_TOKEN), timeout=10).json()["dashboard"]["title"]

    assert title() == "From the file"
    home.write_text(json.dumps({**_live_template(), "title": "Edited file"}), encoding="utf-8")
    assert title() == "Edited file"
