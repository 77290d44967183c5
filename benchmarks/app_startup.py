"""The app as a user meets it, cold: for each of `--repeat` fresh servers (no model cached), the
seconds from opening the page to

    first paint           the Classify page's title is drawn (the model may still be loading)
    first classification  an uploaded test image's label is shown (the image is handed to the
                          uploader as soon as the uploader exists)

and the per-image latency the app shows for the newest run's samples/ (one test image per class).

    python benchmarks/app_startup.py --runs runs      # needs Chromium (apt-get install chromium)

Printed next to the figures measured before the Classify page painted ahead of loading the model
(BEFORE, below: commit 0a9e3bd, the 2-core dev box, 2026-11-30, default run).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Median [3 runs] of this script at 0a9e3bd (the page drew nothing until its imports were done).
BEFORE = {
    "first paint": "2.35 s [2.35, 2.32, 2.48]",
    "first classification": "8.59 s [8.59, 8.08, 8.81]",
}


def _serve(runs_root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
         str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=dict(os.environ, IMGCLF_RUNS=str(runs_root.resolve())),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            if proc.poll() is not None:
                sys.exit("error: the app server did not start")
            time.sleep(0.1)


def _one(browser, url: str, samples: list[str]) -> tuple[float, float, list[float]]:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.monotonic()
    page.goto(url)
    expect(page.get_by_role("heading", name="Classify")).to_be_visible(timeout=120_000)
    paint = time.monotonic() - start
    page.locator("input[type=file]").first.wait_for(state="attached", timeout=120_000)
    page.locator("input[type=file]").first.set_input_files(samples[0])
    expect(page.get_by_text(" · p = ").first).to_be_visible(timeout=120_000)
    classified = time.monotonic() - start
    # Added to the first image (the page keeps uploads); the model is warm now.
    page.locator("input[type=file]").first.set_input_files(samples)
    expect(page.get_by_text(" · p = ")).to_have_count(1 + len(samples), timeout=120_000)
    shown = page.get_by_text(" · p = ").all_inner_texts()
    latencies = [float(t.split(" · ")[-1].removesuffix(" ms")) for t in shown]
    page.close()
    return paint, classified, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from imgclf.ui.catalog import list_runs

    newest = list_runs(args.runs)[0].path
    samples = sorted(str(p) for p in (newest / "samples").glob("*.png"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; run {newest.name}")
    figures: dict[str, list[float]] = {"first paint": [], "first classification": []}
    latencies: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        for n in range(args.repeat):
            proc, url = _serve(args.runs)  # a fresh server: nothing cached
            try:
                paint, classified, shown = _one(browser, url, samples)
            finally:
                proc.terminate()
                proc.wait(15)
            figures["first paint"].append(paint)
            figures["first classification"].append(classified)
            latencies += shown
            took = f"first paint {paint:.2f} s, first classification {classified:.2f} s"
            print(f"run {n + 1}: {took}", flush=True)
        browser.close()
    for name, values in figures.items():
        before = BEFORE[name]
        was = f"   (before: {before})" if before else ""
        runs_ = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:>22}: median {statistics.median(values):.2f} s  [{runs_}]{was}")
    print(
        f"latency shown per image: median {statistics.median(latencies):.1f} ms, "
        f"min {min(latencies):.1f}, max {max(latencies):.1f} ({len(latencies)} images)"
    )


if __name__ == "__main__":
    main()
