"""Shared by the browser tests: the app served by `imgclf-app` (started outside the repository)
on a free port against a runs root, Debian's Chromium driven through Playwright (no browser
download), and the waits every page needs. Imported by the test modules (pytest puts tests/ on
sys.path)."""

from __future__ import annotations

import colorsys
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# How long any wait for an effect may take (the server answering, a heading, a chart, a run
# finishing) before the test fails. Every wait ends as soon as its effect shows, so this only
# bounds a hang; it is generous so that a machine at load 10 is slow, not failing.
WAIT_S = int(os.environ.get("IMGCLF_BROWSER_WAIT_S", "900"))


def _expect_waits() -> None:
    """Playwright's `expect` polls for WAIT_S instead of its default 5 s."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_S * 1000)


_expect_waits()


def chromium() -> str:
    """Debian's Chromium (or $IMGCLF_CHROMIUM); the test fails, naming the fix, without it."""
    path = os.environ.get("IMGCLF_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("no Chromium: `apt-get install chromium` (or set IMGCLF_CHROMIUM)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port`, from /proc/net/tcp (IPv4, as
    the kernel sees them: "127.0.0.1" for loopback only, "0.0.0.0" for every interface)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(host))))
    return found


@contextlib.contextmanager
def serve(runs_root: Path, log_dir: Path, address: str | None = None, **env: str) -> Iterator[str]:
    """The app served for `runs_root` on a free port by `imgclf-app`, started in `log_dir`
    (not the repository: its .streamlit/config.toml must not be what makes it local), on
    `address` (imgclf-app's default, 127.0.0.1, when None); yields (its URL on 127.0.0.1, the
    port) once the health endpoint answers, and stops the server at the end whatever happens."""
    port = free_port()
    log_path = log_dir / f"streamlit-{port}.log"
    log = log_path.open("w")
    command = [str(Path(sys.executable).with_name("imgclf-app")), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, *(["--address", address] if address else []), "--runs", str(runs_root)],
        cwd=log_dir, env=dict(os.environ, **env), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT_S
        while True:  # the health endpoint answers once the server listens
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"server did not start: {log_path.read_text()}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/", port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000, **context: object):
    """A fresh Chromium page (closed at the end)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            ctx = browser.new_context(viewport={"width": width, "height": height}, **context)
            ctx.set_default_timeout(WAIT_S * 1000)  # clicks, downloads
            yield ctx.new_page()
        finally:
            browser.close()


def settled(page) -> None:
    """Wait until the script run is over: no running indicator, no stale (greyed) elements left
    from the previous page."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0)
    expect(page.locator("[data-stale='true']")).to_have_count(0)


def go_to(page, name: str, title: str | None = None) -> None:
    """Click a page in the sidebar and wait for its heading and the end of the script run."""
    from playwright.sync_api import expect

    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).first.click()
    expect(page.get_by_role("heading", name=title or name, exact=True).first).to_be_visible()
    settled(page)
    expect(page.get_by_text("This app has encountered an error")).to_have_count(0)


def hue(color: str) -> float:
    """The hue (0..1) of a "#rrggbb" or "rgb(r, g, b)" colour."""
    if color.startswith("#"):
        r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(v) for v in re.findall(r"\d+", color)[:3])
    return colorsys.rgb_to_hls(r / 255, g / 255, b / 255)[0]


def hue_gap(a: float, b: float) -> float:
    """Distance between two hues on the colour circle (0..0.5)."""
    return min(abs(a - b), 1 - abs(a - b))
