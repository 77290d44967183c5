"""The app as a user meets it: seconds from `streamlit run app.py` to the first rendered Classify
page (model loaded), and the per-image latency the app shows for uploaded images.

    python benchmarks/app_startup.py --runs runs      # needs Chromium (apt-get install chromium)

Uploads the newest run's samples/ (one test image per class), reads the app's results table
(decode + preprocess + forward per image) and prints the median; stops the server at the end.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from imgclf.ui.catalog import list_runs

    newest = list_runs(args.runs)[0].path
    samples = sorted(str(p) for p in (newest / "samples").glob("*.png"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; run {newest.name}")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
         str(port)],
        cwd=ROOT, env=dict(os.environ, IMGCLF_RUNS=str(args.runs.resolve())),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        listening = time.monotonic() - start
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_text("Upload one or more images")).to_be_visible(timeout=120_000)
            first = time.monotonic() - start
            print(f"server listening after {listening:.1f} s; first Classify page {first:.1f} s")
            page.locator("input[type=file]").set_input_files(samples)
            expect(page.get_by_text("Download CSV")).to_be_visible(timeout=120_000)
            shown = page.get_by_text(" · p = ").all_inner_texts()
            latencies = [float(t.split(" · ")[-1].removesuffix(" ms")) for t in shown]
            print(
                f"{len(latencies)} images: latency shown median {statistics.median(latencies):.1f}"
                f" ms, min {min(latencies):.1f}, max {max(latencies):.1f} (first image included)"
            )
            browser.close()
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    main()
