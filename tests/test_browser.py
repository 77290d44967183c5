"""The app in a real browser: `streamlit run app.py` as a server on 127.0.0.1 against a fixture
runs root, driven by Debian's Chromium through Playwright (no browser download)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from imgclf import runs

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("Training curves", "Evaluation", "Compare", "Model", "Train")


def _chromium() -> str:
    path = os.environ.get("IMGCLF_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("no Chromium: `apt-get install chromium` (or set IMGCLF_CHROMIUM)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(app_runs: Path, tmp_path: Path):
    """The app served on a free local port; stopped at the end whatever happens."""
    port = _free_port()
    log = (tmp_path / "streamlit.log").open("w")
    env = dict(os.environ, IMGCLF_RUNS=str(app_runs))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # the health endpoint answers once the server listens
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"server did not start: {(tmp_path / 'streamlit.log').read_text()}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _hue(color: str) -> float:
    """The hue (0..1) of a "#rrggbb" or "rgb(r, g, b)" colour."""
    import colorsys
    import re

    if color.startswith("#"):
        r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(v) for v in re.findall(r"\d+", color)[:3])
    return colorsys.rgb_to_hls(r / 255, g / 255, b / 255)[0]


def _hue_gap(a: float, b: float) -> float:
    """Distance between two hues on the colour circle (0..0.5)."""
    return min(abs(a - b), 1 - abs(a - b))


def _settled(page) -> None:
    """Wait until the script run is over: no running indicator, no stale (greyed) elements left
    from the previous page."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0, timeout=60_000)
    expect(page.locator("[data-stale='true']")).to_have_count(0, timeout=60_000)


@pytest.mark.slow
def test_upload_in_a_real_browser_shows_the_label(server: str, app_runs: Path, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    from imgclf.ui import catalog

    newest = catalog.list_runs(app_runs)[0].path
    labels = runs.read_labels(newest)
    sample = sorted((newest / runs.SAMPLES).glob("*.png"))[0]
    true_label = sample.stem.split("true-", 1)[1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            expect(page.get_by_text("Upload one or more images")).to_be_visible(timeout=90_000)
            page.screenshot(path=tmp_path / "classify-empty.png")
            page.locator("input[type=file]").set_input_files(str(sample))
            result = page.get_by_text(" · p = ").first
            expect(result).to_be_visible(timeout=60_000)
            shown = result.inner_text().split(" · ")[0].strip()
            assert shown in labels
            from imgclf.predict import Predictor

            expected, _ = Predictor.from_path(newest).predict_files([sample], k=3)
            assert shown == expected[0].label, (shown, true_label)
            _settled(page)
            page.screenshot(path=tmp_path / "classify.png")
            # Every top-k bar is labelled (Vega used to drop overlapping labels: 2 of 3 shown).
            # Vega keeps a label it prunes for overlap in the SVG, with opacity 0.
            labels_drawn = page.get_by_test_id("stVegaLiteChart").first.locator(
                ".role-axis-label text:not([opacity='0'])"
            )
            expect(labels_drawn.first).to_be_attached(timeout=30_000)  # Vega draws after load
            texts = set(labels_drawn.all_text_contents())
            assert set(expected[0].labels) <= texts, (expected[0].labels, texts)
            # The selected run's whole label (name, family, accuracy, date) is readable
            # without opening the selector, which cuts it off.
            entry = catalog.list_runs(app_runs)[0]
            expect(page.get_by_text(f"Selected: {entry.label}")).to_be_visible()
            for name in PAGES:
                page.get_by_text(name, exact=True).first.click()
                title = "Compare runs" if name == "Compare" else name
                expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible(
                    timeout=60_000
                )
                _settled(page)
                expect(page.get_by_text("This app has encountered an error")).to_have_count(0)
                if name == "Compare":  # two runs: two distinct colours, names in full
                    legend = page.get_by_test_id("stVegaLiteChart").first
                    symbols = legend.locator(".role-legend-symbol path")
                    expect(symbols.first).to_be_attached(timeout=30_000)
                    fills = [symbols.nth(i).get_attribute("fill") for i in range(symbols.count())]
                    hues = [_hue(f) for f in fills]
                    assert len(hues) == 2 and _hue_gap(*hues) > 0.1, fills  # not two blues
                    names = set(legend.locator(".role-legend-label text").all_text_contents())
                    assert names == {e.name for e in catalog.list_runs(app_runs)[:2]}, names
                page.screenshot(path=tmp_path / f"{name.lower().replace(' ', '-')}.png")
        finally:
            browser.close()
    assert len(list(tmp_path.glob("*.png"))) == 2 + len(PAGES)
