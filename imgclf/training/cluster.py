"""The cluster a multi-worker process belongs to, from the `TF_CONFIG` environment variable
(TensorFlow's, set by hand, by Ray Train or by Kubernetes): whether this process is the chief,
how many processes there are, and this one's place. Plain JSON reading: no TensorFlow."""

from __future__ import annotations

import json
import os


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a worker other than worker 0 (or a non-chief)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    task = json.loads(raw).get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0)


def cluster_size() -> int:
    """The number of processes TF_CONFIG names (workers and a chief), 1 without it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    cluster = json.loads(raw).get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def worker_index() -> int:
    """This process's place in the cluster TF_CONFIG names: a chief first, then the workers
    by index (0 without TF_CONFIG)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    config = json.loads(raw)
    task = config.get("task", {})
    if task.get("type", "worker") == "chief":
        return 0
    return int(task.get("index", 0)) + len(config.get("cluster", {}).get("chief", []))
