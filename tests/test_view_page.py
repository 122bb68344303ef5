"""The live page (VIEW_PORT) in a real headless Chromium, fed by the bridge as a subprocess from a
real LSL outlet of known content: a 10 Hz sine on one channel over white noise on all of them.

What the page shows is read back from its canvas pixels and mapped to Hz with the axis the page
publishes (data attributes), which is itself checked against the frequency axis computed here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pylsl
import pytest
from websockets.sync.client import connect

from bridge.codecs.view import decode_frame
from bridge.sinks.view import PAGE_QUEUE_FRAMES
from tests.bridge_process import BridgeProcess, free_port, wait_until
from tests.fixtures_browser import canvas_pixels, console_errors, screenshot
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.influxdb_server import InfluxDBServer

FS = 256.0
NPERSEG, NOVERLAP = 256, 192  # hop 64: 4 frames/s
HISTORY_SEC = 10.0
LABELS = [f"ch{i}" for i in range(16)]
SINE_CHANNEL, SINE_HZ = "ch5", 10.0
FLAT_CHANNEL = "ch15"  # a dead electrode: exact zeros
BIN_HZ = FS / NPERSEG


def known_signal(seconds: float = 10.0, seed: int = 1) -> np.ndarray:
    """White noise (sigma 1) everywhere but on ch15 (flat zeros), plus a 10 Hz sine of amplitude 20 on ch5.

    10 s hold a whole number of 10 Hz cycles, so the signal can be looped without a jump.
    """
    n = int(seconds * FS)
    x = np.random.default_rng(seed).standard_normal((n, len(LABELS))).astype(np.float32)
    x[:, LABELS.index(SINE_CHANNEL)] += 20 * np.sin(2 * np.pi * SINE_HZ * np.arange(n) / FS).astype(np.float32)
    x[:, LABELS.index(FLAT_CHANNEL)] = 0.0
    return x


def stopped(process: BridgeProcess) -> None:
    process.close()  # SIGKILL by PID if still running, and close its log


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One known-content outlet, one marker outlet and one bridge with the page on, for the page tests."""
    tmp = tmp_path_factory.mktemp("view")
    name, marker_name = unique("view"), unique("markers")
    outlet = make_outlet(name, channels=len(LABELS), rate=FS, labels=LABELS)
    markers = pylsl.StreamOutlet(pylsl.StreamInfo(marker_name, "Markers", 1, 0, "string", marker_name))
    player = Player(outlet, known_signal(), FS, chunk=16, loop=True).start()
    port = free_port()
    process = BridgeProcess({
        "LSL_STREAM_NAME": name,
        "LSL_MARKER_STREAM_NAME": marker_name,
        "SPECTRUM_NPERSEG": str(NPERSEG),
        "SPECTRUM_NOVERLAP": str(NOVERLAP),
        "GRAFANA_URL": "",
        "INFLUXDB_URL": "",
        "SPOOL_DIR": str(tmp / "spool"),
        "VIEW_PORT": str(port),
        "VIEW_HISTORY_SEC": str(HISTORY_SEC),
    }, tmp).start()
    try:
        process.wait_for_output(f"live page on http://127.0.0.1:{port}/")
        process.wait_for_output("connected to")
        yield {"url": f"http://127.0.0.1:{port}/", "process": process, "markers": markers}
    finally:
        player.stop()
        stopped(process)


def _dataset(driver, key: str) -> str | None:  # type: ignore[no-untyped-def]
    return driver.execute_script(f"return document.body.dataset.{key} || null")


def _open(driver, url: str) -> None:  # type: ignore[no-untyped-def]
    driver.get(url)
    wait_until(lambda: _dataset(driver, "historyFrames") is not None, 60, "the page never finished loading its history")
    # a bridge that has just started sends its layout with its first frame, after the (empty) history
    wait_until(lambda: int(_dataset(driver, "framesReceived") or 0) >= 1, 60, "no frame reached the page")


def _spectrogram(driver, channel: str):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'canvas.spectrogram[data-channel="{channel}"]')


def _plot(driver, canvas) -> tuple[dict[str, float], np.ndarray]:  # type: ignore[no-untyped-def]
    d = {k: float(v) for k, v in driver.execute_script("return Object.assign({}, arguments[0].dataset)", canvas).items()
         if k != "channel"}
    pixels = canvas_pixels(driver, canvas, int(d["plotLeft"]), int(d["plotTop"]), int(d["plotWidth"]), int(d["plotHeight"]))
    return d, pixels


def _filled_columns(pixels: np.ndarray) -> int:
    """Plot columns holding data: unfilled ones are pure black (the colour map's darkest is #000004)."""
    return int(np.sum(np.any(pixels[:, :, :3] != 0, axis=(0, 2))))


def test_page_loads_without_console_errors(browser, page: dict) -> None:  # type: ignore[no-untyped-def]
    _open(browser, page["url"])
    wait_until(lambda: int(_dataset(browser, "framesReceived") or 0) >= 3, 60, "no frames reached the page")
    from selenium.webdriver.common.by import By

    wait_until(lambda: "view" in browser.find_element(By.ID, "sinks").text, 30, "no sink states shown")
    header = browser.find_element(By.TAG_NAME, "header").text
    screenshot(browser, "view-loaded")
    assert console_errors(browser) == []
    assert "256 Hz" in header and "16 ch" in header and "frames/s" in header
    sinks = browser.find_element(By.ID, "sinks").text
    assert re.search(r"influxdb .+ q\d+", sinks) and re.search(r"view ok q\d+", sinks)
    canvas = _spectrogram(browser, "ch0")  # the first four channels are shown by default
    assert canvas.is_displayed()


def test_brightest_row_of_the_sine_channel_is_10_hz(browser, page: dict) -> None:  # type: ignore[no-untyped-def]
    _open(browser, page["url"] + f"?channels={SINE_CHANNEL}")
    canvas = _spectrogram(browser, SINE_CHANNEL)
    wait_until(lambda: _filled_columns(_plot(browser, canvas)[1]) >= int(_plot(browser, canvas)[0]["plotWidth"]) // 2,
               60, "the spectrogram never filled half its width")
    screenshot(browser, "view-sine")
    axis, pixels = _plot(browser, canvas)
    # the page's published axis equals the one computed here: bins 0..fs/2 in steps of fs/nperseg, edges half a bin out
    assert axis["freqLow"] == pytest.approx(-BIN_HZ / 2)
    assert axis["freqHigh"] == pytest.approx(FS / 2 + BIN_HZ / 2)
    assert axis["bins"] == NPERSEG // 2 + 1
    filled = pixels[:, -int(axis["plotWidth"]) // 4:, :3].astype(np.float64)  # newest quarter: certainly data
    luminance = (0.2126 * filled[..., 0] + 0.7152 * filled[..., 1] + 0.0722 * filled[..., 2]).mean(axis=1)
    row = int(np.argmax(luminance))
    hz = axis["freqHigh"] - (row + 0.5) / axis["plotHeight"] * (axis["freqHigh"] - axis["freqLow"])
    assert abs(hz - SINE_HZ) <= BIN_HZ, f"brightest row {row} is {hz:.2f} Hz"
    assert luminance[row] > 2 * np.median(luminance)  # a clear line, not the top of the noise


def test_the_picture_moves(browser, page: dict) -> None:  # type: ignore[no-untyped-def]
    _open(browser, page["url"] + f"?channels={SINE_CHANNEL}")
    canvas = _spectrogram(browser, SINE_CHANNEL)
    first_time = float(_dataset(browser, "newestFrameMs") or 0)
    _, before = _plot(browser, canvas)
    wait_until(lambda: float(_dataset(browser, "newestFrameMs") or 0) >= first_time + 1000, 60, "no newer frames")
    _, after = _plot(browser, canvas)
    assert not np.array_equal(before, after)
    # the newest quarter scrolled: what was at the right edge one second ago moved left
    assert _filled_columns(after) >= _filled_columns(before)


def test_marker_appears_with_its_text(browser, page: dict) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    _open(browser, page["url"] + f"?channels={SINE_CHANNEL}")
    page["process"].wait_for_output("following marker stream")
    text = f"stimulus {unique('m')}"
    last_push = [0.0]

    def shown() -> bool:
        # LSL only delivers samples pushed after the inlet opened: push (once a second) until one was followed.
        if time.monotonic() - last_push[0] > 1.0:
            page["markers"].push_sample([text])
            last_push[0] = time.monotonic()
        return bool(browser.find_elements(By.CSS_SELECTOR, f'.spec[data-channel="{SINE_CHANNEL}"] .marker'))

    wait_until(shown, 60, lambda: "marker never drawn:\n" + page["process"].output()[-2000:])
    marker = browser.find_elements(By.CSS_SELECTOR, f'.spec[data-channel="{SINE_CHANNEL}"] .marker')[0]
    assert marker.text == text
    d = browser.execute_script("return Object.assign({}, arguments[0].dataset)", _spectrogram(browser, SINE_CHANNEL))
    left = float(marker.value_of_css_property("left").removesuffix("px"))
    assert float(d["plotLeft"]) <= left <= float(d["plotLeft"]) + float(d["plotWidth"])  # a line inside the plot
    assert text in browser.find_element(By.ID, "marker-list").text
    screenshot(browser, "view-marker")


def test_reload_shows_the_history_at_once(browser, page: dict) -> None:  # type: ignore[no-untyped-def]
    _open(browser, page["url"] + f"?channels={SINE_CHANNEL}")
    kept = HISTORY_SEC * FS / (NPERSEG - NOVERLAP)  # 4 frames/s for VIEW_HISTORY_SEC: ~40 frames
    wait_until(lambda: int(_dataset(browser, "framesReceived") or 0) >= kept + 4, 60, "the bridge has not run that long yet")
    browser.refresh()
    wait_until(lambda: _dataset(browser, "historyFrames") is not None, 60, "the reloaded page got no history")
    history = int(_dataset(browser, "historyFrames") or 0)
    axis, pixels = _plot(browser, _spectrogram(browser, SINE_CHANNEL))
    live = int(_dataset(browser, "framesReceived") or 0) - history
    assert history >= kept - 2  # the bridge sends what it kept before any live frame
    per_frame = axis["plotWidth"] / axis["columns"]
    assert _filled_columns(pixels) >= (history - 1) * per_frame * 0.9, (history, live)
    screenshot(browser, "view-reloaded")


def test_a_page_opened_before_the_stream_draws_it_when_it_arrives(browser, tmp_path: Path, players: list[Player]) -> None:  # type: ignore[no-untyped-def]
    """`make demo` prints the URL before the stream is found: a page opened then (empty history,
    no layout yet) must start drawing when the layout arrives with the first frame."""
    from selenium.webdriver.common.by import By

    name, port = unique("viewearly"), free_port()
    process = BridgeProcess({"LSL_STREAM_NAME": name, "GRAFANA_URL": "", "INFLUXDB_URL": "", "SPOOL_DIR": str(tmp_path / "spool"),
                             "VIEW_PORT": str(port), "SPECTRUM_NPERSEG": str(NPERSEG), "SPECTRUM_NOVERLAP": str(NOVERLAP)},
                            tmp_path).start()
    try:
        process.wait_for_output(f"live page on http://127.0.0.1:{port}/")
        browser.get(f"http://127.0.0.1:{port}/")
        wait_until(lambda: _dataset(browser, "historyFrames") == "0", 60, "the page did not get its (empty) history")
        outlet = make_outlet(name, channels=len(LABELS), rate=FS, labels=LABELS)
        players.append(Player(outlet, known_signal(), FS, chunk=16, loop=True).start())
        wait_until(lambda: bool(browser.find_elements(By.CSS_SELECTOR, 'canvas.spectrogram[data-channel="ch0"]')), 60,
                   "no spectrogram after the stream arrived")
        canvas = _spectrogram(browser, "ch0")
        overview = browser.find_element(By.ID, "overview")
        wait_until(lambda: overview.get_attribute("data-channels") == str(len(LABELS)), 60, "the overview was never drawn")
        _, first = _plot(browser, canvas)
        wait_until(lambda: not np.array_equal(_plot(browser, canvas)[1], first), 60, "the spectrogram does not move")
        assert console_errors(browser) == []
    finally:
        browser.get("about:blank")  # leave before the bridge stops: no reconnect errors for the next test
        browser.get_log("browser")
        stopped(process)


def test_non_loopback_host_without_token_exits_2(tmp_path: Path) -> None:
    process = BridgeProcess({"LSL_STREAM_NAME": "x", "VIEW_PORT": str(free_port()), "VIEW_HOST": "0.0.0.0"}, tmp_path).start()
    try:
        assert process.proc is not None and process.proc.wait(60) == 2
        lines = process.output().strip().splitlines()
        assert lines == ["eeg-bridge: VIEW_HOST 0.0.0.0 is reachable from other machines: set VIEW_TOKEN (or "
                         "VIEW_TOKEN_FILE) so that only people with the token can watch, or bind the page to 127.0.0.1."]
    finally:
        stopped(process)


def test_token_is_asked_once_and_never_shown(browser, tmp_path: Path, players: list[Player]) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    name, token = unique("viewtok"), "s3cret-" + unique("t")
    outlet = make_outlet(name, channels=4, rate=FS)
    players.append(Player(outlet, known_signal()[:, :4], FS, chunk=16, loop=True).start())
    port = free_port()
    (tmp_path / "token").write_text(token + "\n")
    process = BridgeProcess({"LSL_STREAM_NAME": name, "GRAFANA_URL": "", "INFLUXDB_URL": "", "SPOOL_DIR": str(tmp_path / "spool"),
                             "VIEW_PORT": str(port), "VIEW_TOKEN_FILE": str(tmp_path / "token"), "METRICS_PORT": str(free_port())},
                            tmp_path).start()
    try:
        process.wait_for_output("connected to")
        browser.get(f"http://127.0.0.1:{port}/")
        form = browser.find_element(By.ID, "auth")
        wait_until(form.is_displayed, 30, "the page did not ask for the token")
        assert int(_dataset(browser, "framesReceived") or 0) == 0
        browser.find_element(By.ID, "auth-token").send_keys("wrong")
        browser.find_element(By.CSS_SELECTOR, "#auth-form button").click()
        wait_until(lambda: browser.find_element(By.ID, "auth-error").is_displayed(), 30, "a wrong token was not refused")
        browser.find_element(By.ID, "auth-token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#auth-form button").click()
        wait_until(lambda: int(_dataset(browser, "framesReceived") or 0) >= 2, 60, "no frames with the right token")
        browser.refresh()  # kept for the session: not asked again
        wait_until(lambda: int(_dataset(browser, "framesReceived") or 0) >= 2, 60, "no frames after a reload")
        assert not browser.find_element(By.ID, "auth").is_displayed()
        assert console_errors(browser) == []
        # a client without the token gets nothing but the refusal
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "hello", "token": "nope"}))
            assert json.loads(ws.recv(10)) == {"type": "auth", "ok": False, "required": True}
        assert process.terminate() == 0
        assert token not in process.output()
    finally:
        browser.execute_script("sessionStorage.clear()")
        stopped(process)


def _stalled_client(port: int) -> socket.socket:
    """A page that stops reading: a raw WebSocket that says hello and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)  # byte by byte: nothing after the handshake is read
    assert head.startswith(b"HTTP/1.1 101"), head
    payload, mask = json.dumps({"type": "hello", "token": ""}).encode(), os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


def _metric(port: int, name: str, **labels: str) -> float:
    """One sample from the bridge's /metrics (0 when absent)."""
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        metric, _, value = line.rpartition(" ")
        if not line.startswith("#") and metric.split("{")[0] == name and all(f'{k}="{v}"' in metric for k, v in labels.items()):
            return float(value)
    return 0.0


@pytest.mark.influxdb
def test_a_stalled_page_drops_its_own_frames_and_the_archive_stays_complete(
    influxdb_server: InfluxDBServer, influxdb_database: str, tmp_path: Path, players: list[Player]
) -> None:
    channels, fs, nperseg, noverlap, seconds = 64, 1000.0, 256, 224, 30.0  # 31 frames/s of 64 x 129
    name = unique("stall")
    n = int(seconds * fs)
    expected_frames = (n - nperseg) // (nperseg - noverlap) + 1
    x = np.random.default_rng(3).standard_normal((n, channels)).astype(np.float32)
    outlet = make_outlet(name, channels=channels, rate=fs, labels=[f"e{i}" for i in range(channels)])
    view_port, metrics_port = free_port(), free_port()
    process = BridgeProcess({
        "LSL_STREAM_NAME": name, "SPECTRUM_NPERSEG": str(nperseg), "SPECTRUM_NOVERLAP": str(noverlap),
        "GRAFANA_URL": "", "INFLUXDB_URL": influxdb_server.url, "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": influxdb_database,
        "BATCH_INTERVAL_SEC": "0.5", "SPOOL_DIR": str(tmp_path / "spool"),
        "VIEW_PORT": str(view_port), "METRICS_PORT": str(metrics_port),
    }, tmp_path).start()
    stalled = None
    try:
        process.wait_for_output("connected to")
        stalled = _stalled_client(view_port)
        player = Player(outlet, x, fs, chunk=10)
        players.append(player)
        player.start()
        wait_until(lambda: _metric(metrics_port, "eeg_bridge_sink_frames_dropped_total", sink="view", reason="stale") >= 3 * PAGE_QUEUE_FRAMES,
                   60, lambda: "the stalled page never dropped frames:\n" + process.output()[-2000:])
        assert _metric(metrics_port, "eeg_bridge_sink_queue_depth", sink="view") == PAGE_QUEUE_FRAMES  # its own limit
        # meanwhile a page that reads gets every new frame, in order: it is not held back by the stalled one
        with connect(f"ws://127.0.0.1:{view_port}/ws", max_size=None) as reader:
            reader.send(json.dumps({"type": "hello", "token": ""}))
            assert json.loads(reader.recv(10))["ok"] is True
            history_done = False
            seqs: list[int] = []
            live = 0
            while live < 40:
                message = reader.recv(30)
                if isinstance(message, bytes):
                    seqs.append(decode_frame(message)["seq"])
                    live += history_done
                else:
                    history_done = history_done or json.loads(message)["type"] == "history_end"
        assert np.all(np.diff(seqs) == 1), seqs  # the history, then live frames, none missing
        assert _metric(metrics_port, "eeg_bridge_sink_frames_sent_total", sink="view") >= 40
        assert player.done.wait(90)
        wait_until(lambda: _metric(metrics_port, "eeg_bridge_frames_computed_total") >= expected_frames, 60, process.output)
        assert process.terminate() == 0
        count = influxdb_server.query('SELECT COUNT("000.00") FROM "eeg_spectrum" WHERE "channel" = \'e0\'', db=influxdb_database)
        assert int(count["results"][0]["series"][0]["values"][0][1]) == expected_frames  # the archive is complete
    finally:
        if stalled is not None:
            stalled.close()
        stopped(process)


def test_pause_freezes_the_picture_and_typed_db_range_applies(browser, page: dict) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(browser, page["url"] + f"?channels={SINE_CHANNEL}")
    canvas = _spectrogram(browser, SINE_CHANNEL)
    browser.find_element(By.ID, "pause").click()
    assert browser.find_element(By.ID, "pause").text == "Resume"
    received = int(_dataset(browser, "framesReceived") or 0)
    _, frozen = _plot(browser, canvas)
    wait_until(lambda: int(_dataset(browser, "framesReceived") or 0) >= received + 4, 60, "no frames while paused")
    assert np.array_equal(_plot(browser, canvas)[1], frozen)  # frames keep arriving, the picture stands still
    browser.find_element(By.ID, "pause").click()
    wait_until(lambda: not np.array_equal(_plot(browser, canvas)[1], frozen), 60, "the picture did not move on resume")

    browser.find_element(By.ID, "auto").click()  # typed range
    for field, value in (("dbmin", "-7"), ("dbmax", "13")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value + Keys.TAB)  # leaving the field fires its change event
    wait_until(lambda: canvas.get_attribute("data-db-low") == "-7" and canvas.get_attribute("data-db-high") == "13", 30,
               "the typed range was not applied")
    assert (browser.find_element(By.ID, "cb-min").text, browser.find_element(By.ID, "cb-max").text) == ("-7", "13")
    browser.find_element(By.ID, "auto").click()


def test_a_flat_electrode_stands_out_in_the_overview(browser, page: dict) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(browser, page["url"])
    overview = browser.find_element(By.ID, "overview")
    wait_until(lambda: int(overview.get_attribute("data-badge-width") or 0) > 0, 60, "no quality badges drawn")
    wait_until(lambda: "view" in browser.find_element(By.ID, "sinks").text, 30, "no sink states shown")
    top = overview.location["y"]
    d = {k: float(v) for k, v in browser.execute_script("return Object.assign({}, arguments[0].dataset)", overview).items()}
    row_h = d["rowHeight"]
    badges = canvas_pixels(browser, overview, int(d["badgeLeft"]), 0, int(d["badgeWidth"]), int(row_h * d["channels"]))
    colour = {name: badges[int((i + 0.5) * row_h), :, :3].mean(axis=0) for i, name in enumerate(LABELS)}
    r, g, _ = colour[FLAT_CHANNEL]
    assert r > 200 and g < 120, colour[FLAT_CHANNEL]  # red: bad
    for name in (c for c in LABELS if c != FLAT_CHANNEL):
        r, g, _ = colour[name]
        assert g > 150 and r < 120, (name, colour[name])  # green: good
    screenshot(browser, "view-flat-channel")
    # a click on its row shows that channel alone, with its verdict
    row = LABELS.index(FLAT_CHANNEL)
    size = overview.size  # CSS pixels; the rows are in the canvas's own pixels
    scale_x = size["width"] / int(overview.get_attribute("width"))
    scale_y = size["height"] / int(overview.get_attribute("height"))
    ActionChains(browser).move_to_element_with_offset(
        overview, int((d["plotLeft"] + 20) * scale_x - size["width"] / 2), int((row + 0.5) * row_h * scale_y - size["height"] / 2)
    ).click().perform()

    def shown() -> list[str | None]:
        return [e.get_attribute("data-channel") for e in browser.find_elements(By.CSS_SELECTOR, ".spec")]

    wait_until(lambda: shown() == [FLAT_CHANNEL], 30, lambda: f"clicking the row did not select the channel: shown {shown()}")
    assert overview.location["y"] == top  # nothing moved the overview under the mouse meanwhile
    badge = browser.find_element(By.CSS_SELECTOR, f'.spec[data-channel="{FLAT_CHANNEL}"] .badge')
    wait_until(lambda: badge.text == "bad (flat)", 30, lambda: f"badge says {badge.text!r}")
