"""The live page's header follows the stream both ways, in a real headless Chromium.

A page opened before the stream exists (what ``make demo`` does: it prints the URL first) must not
say "stream lost" for the rest of its life: it waits, turns live when the outlet appears, says
"stream lost" when the outlet goes away and live again when it comes back. The header word is read
from the page itself (``#conn`` and ``body[data-state]``) at each step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pylsl

from tests.bridge_process import BridgeProcess, free_port, wait_until
from tests.fixtures_browser import console_errors, screenshot
from tests.fixtures_lsl import Player, make_outlet, unique

FS = 256.0
CHANNELS = 4


def _header_word(driver) -> str:  # type: ignore[no-untyped-def]
    return str(driver.execute_script("return document.getElementById('conn').textContent"))


def _wait_word(driver, wanted: str, why: str) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: _header_word(driver) == wanted, 60,
               lambda: f"{why}: header says {_header_word(driver)!r}, expected {wanted!r}")
    assert driver.execute_script("return document.body.dataset.state") == wanted


def _outlet_player(name: str, players: list[Player]) -> tuple[pylsl.StreamOutlet, Player]:
    outlet = make_outlet(name, channels=CHANNELS, rate=FS)
    data = np.random.default_rng(0).standard_normal((int(10 * FS), CHANNELS)).astype(np.float32)
    player = Player(outlet, data, FS, chunk=16, loop=True).start()
    players.append(player)
    return outlet, player


def test_header_follows_the_stream_both_ways(
    browser, bridges: Callable[..., BridgeProcess], players: list[Player], tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    name, port = unique("state"), free_port()
    process = bridges({
        "LSL_STREAM_NAME": name,
        "LSL_STALE_SEC": "1",
        "SPECTRUM_NPERSEG": "256",
        "SPECTRUM_NOVERLAP": "192",
        "GRAFANA_URL": "",
        "INFLUXDB_URL": "",
        "SPOOL_DIR": str(tmp_path / "spool"),
        "VIEW_PORT": str(port),
        "VIEW_HISTORY_SEC": "5",
    })
    url = f"http://127.0.0.1:{port}/"
    process.wait_for_output(f"live page on {url}")

    # 1. page open, no outlet yet: the page waits, it does not claim the stream was lost (or is live)
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.getElementById('fps').textContent").endswith("frames/s"),
               60, "no status reached the page")
    _wait_word(browser, "waiting for stream", "before the outlet exists")
    assert "connected to" not in process.output()

    # 2. the outlet appears: live
    outlet, player = _outlet_player(name, players)
    process.wait_for_output("connected to")
    _wait_word(browser, "live", "after the outlet appeared")
    screenshot(browser, "view-state-live")

    # 3. the outlet goes away: stream lost
    player.stop()
    del outlet, player
    players.clear()
    process.wait_for_output("lost LSL stream")
    _wait_word(browser, "stream lost", "after the outlet went away")

    # 4. it comes back (a new outlet, same name): live again
    outlet, player = _outlet_player(name, players)
    wait_until(lambda: process.output().count("connected to") >= 2, 60,
               lambda: f"the bridge never reconnected:\n{process.output()[-3000:]}")
    _wait_word(browser, "live", "after the outlet came back")
    screenshot(browser, "view-state-back")
    assert [e for e in console_errors(browser) if "favicon" not in e["message"]] == []
    assert process.terminate() == 0
