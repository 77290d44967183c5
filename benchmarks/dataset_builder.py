"""The app's dataset builder on a zip of N photos: images per second of `add_zip`, the call the
Train page's "zip of class folders" makes (decoding check, duplicate check, atomic write).

    python benchmarks/dataset_builder.py --images 1000 --work /tmp/bz

Prints the wall time and the rate. Photos are synthetic 640x480 JPEGs (quality 85) in 4
class folders; the zip is built first and not timed.
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def make_zip(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            base = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((640, 480), Image.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=85)
            zf.writestr(f"photos/class{i % 4}/img_{i:05d}.jpg", buf.getvalue())
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--work", default="/tmp/imgclf-builder-bench")
    args = parser.parse_args()
    from imgclf.data.builder import DatasetBuilder

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = make_zip(args.images)
    start, cpu = time.perf_counter(), time.process_time()
    results = DatasetBuilder(work / "ds").add_zip(data, "photos.zip")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    added = sum(r.status == "added" for r in results)
    print(
        f"{args.images} images in a {len(data) / 2**20:.1f} MB zip: {added} added in "
        f"{wall:.1f} s wall ({cpu:.1f} s CPU), {added / wall:.1f} images/s"
    )


if __name__ == "__main__":
    main()
