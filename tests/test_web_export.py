"""`imgclf-export --format web` (`imgclf.export.web`): the page classifies photos in Chromium,
offline, as the run does."""

from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser_kit import browser_page
from conftest import run_command

from imgclf import runs
from imgclf.predict.predictor import Predictor


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no request lines on the test's output
        pass


@pytest.mark.slow
def test_the_web_page_classifies_the_samples_like_the_run_with_the_network_cut_off(
    exported: dict[str, Path], tmp_path: Path
):
    """The folder is served on 127.0.0.1; every request elsewhere is refused (and would fail
    the test: none is made, no CDN). The page loads MediaPipe's WebAssembly and the model, and
    its top-1 on the run's sample images, picked in the file input, is `Predictor`'s."""
    from playwright.sync_api import expect

    run = tmp_path / "run"
    shutil.copytree(exported["rgb"], run)
    done = run_command("imgclf-export", run, "--format", "web")  # makes the MediaPipe file too
    assert done.returncode == 0, done.stderr
    assert (run / runs.MEDIAPIPE).is_file() and (run / runs.WEB / "index.html").is_file()
    samples = sorted((run / runs.SAMPLES).glob("*.png"))
    expected, _ = Predictor.from_path(run).predict_files(samples, k=1)

    handler = functools.partial(_Quiet, directory=str(run / runs.WEB))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    elsewhere: list[str] = []

    def only_here(route) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    try:
        with browser_page() as page:
            page.route("**/*", only_here)
            page.goto(f"{origin}/index.html")
            expect(page.locator("body[data-ready=true]")).to_be_attached()
            page.locator("#files").set_input_files([str(s) for s in samples])
            rows = page.locator("li.result")
            expect(rows).to_have_count(len(samples))
            shown = {row.get_attribute("data-file"): row.locator(".top1").inner_text()
                     for row in rows.all()}  # fmt: skip
            page.screenshot(path=tmp_path / "web-page.png", full_page=True)
    finally:
        server.shutdown()
    assert elsewhere == []
    assert shown == {s.name: p.label for s, p in zip(samples, expected, strict=True)}


def test_the_web_page_is_refused_with_quantize_in_one_line(exported: dict[str, Path]):
    """The page runs the float MediaPipe file; `--quantize int8` with `--format web` would make
    only the int8 one: refused before any work."""
    done = run_command("imgclf-export", exported["rgb"], "--format", "web", "--quantize", "int8")
    assert done.returncode == 2
    why = "--format web runs the float MediaPipe file: leave out --quantize"
    assert done.stderr == f"error: {why}\n"
