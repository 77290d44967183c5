"""What a run costs: `Meter` measures this process per stage of a run (prepare, each training
phase, confidence, evaluation, export): wall time, CPU time (`time.process_time`: every thread
of the process) and peak memory.

Peak memory is the peak *anonymous* resident memory (`RssAnon` in `/proc/self/status`: the
heap, TensorFlow's tensors and every array; not the page cache of files read, nor the shared
libraries), sampled every SAMPLE_S seconds by a thread, because Linux keeps a high-water mark
only for the whole resident set (`VmHWM`, which also counts TensorFlow's ~0.5 GB of mapped
libraries); both are recorded. A spike shorter than SAMPLE_S can escape the sampler; the steps
of a run that allocate much hold their memory for longer. How long a run has left is
`imgclf.training.estimate`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

SAMPLE_S = 0.05


def _status_kb(field: str) -> int | None:
    """A `kB` field of /proc/self/status, or None where there is no /proc (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def anon_mb() -> float | None:
    """This process's anonymous resident memory now, in MB (None without /proc)."""
    kb = _status_kb("RssAnon:")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """The high-water mark of this process's whole resident set, in MB (VmHWM; elsewhere the
    rusage maximum)."""
    kb = _status_kb("VmHWM:")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


class Meter:
    """Wall time, CPU time and peak anonymous memory of this process, per named stage.

    with meter.stage("confidence"): ...      # one row of `report()`
    meter.report() -> {"stages": {name: {wall_s, cpu_s, peak_anon_mb}}, "total": {...}}
    """

    def __init__(self, sample_s: float = SAMPLE_S) -> None:
        self.start_wall, self.start_cpu = time.perf_counter(), time.process_time()
        self.stages: dict[str, dict[str, float | None]] = {}
        self._peak = self._stage_peak = anon_mb()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if self._peak is not None:  # no /proc: wall and CPU only
            self._thread = threading.Thread(
                target=self._sample, args=(sample_s,), name="imgclf-meter", daemon=True
            )
            self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self.sample()

    def sample(self) -> None:
        """Read the memory now (the thread does this every SAMPLE_S; stages do at their ends)."""
        now = anon_mb()
        if now is None:
            return
        with self._lock:
            self._peak = max(self._peak or 0.0, now)
            self._stage_peak = max(self._stage_peak or 0.0, now)

    @property
    def peak_anon_mb(self) -> float | None:
        """The peak anonymous memory since the meter started, MB (None without /proc)."""
        self.sample()
        return self._peak

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the block as stage `name` (a repeated name adds up)."""
        self.sample()
        with self._lock:
            self._stage_peak = anon_mb()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.sample()
            row = self.stages.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_anon_mb": 0.0})
            row["wall_s"] = round(row["wall_s"] + time.perf_counter() - wall, 2)
            row["cpu_s"] = round(row["cpu_s"] + time.process_time() - cpu, 2)
            peak = self._stage_peak
            row["peak_anon_mb"] = (
                None if peak is None else round(max(row["peak_anon_mb"] or 0, peak))
            )

    def elapsed(self) -> float:
        """Seconds since the meter started."""
        return time.perf_counter() - self.start_wall

    def report(self) -> dict[str, Any]:
        """The run's `resources` record (in its metrics): per stage and in all, with what
        measured it."""
        peak = self.peak_anon_mb
        return {
            "stages": self.stages,
            "total": {
                "wall_s": round(self.elapsed(), 2),
                "cpu_s": round(time.process_time() - self.start_cpu, 2),
                "peak_anon_mb": None if peak is None else round(peak),
                "peak_rss_mb": round(peak_rss_mb()),
            },
            "cpus": os.cpu_count(),
            "measured": "this process from the start of train(): wall and CPU time "
            "(time.process_time), peak anonymous memory (RssAnon sampled every "
            f"{SAMPLE_S} s) and peak resident set (VmHWM)",
        }

    def close(self) -> None:
        """Stop the sampling thread."""
        self._stop.set()


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def cost_line(report: dict[str, Any]) -> str:
    """The line a run prints at its end: time and peak memory."""
    total = report["total"]
    memory = (
        f"peak memory {total['peak_anon_mb'] / 1024:.2f} GB (anonymous; resident set "
        f"{total['peak_rss_mb'] / 1024:.2f} GB)"
        if total["peak_anon_mb"] is not None
        else f"peak resident set {total['peak_rss_mb'] / 1024:.2f} GB"
    )
    return f"cost: {duration(total['wall_s'])} wall, {duration(total['cpu_s'])} CPU; {memory}"
