"""The cluster a multi-worker process belongs to, from the `TF_CONFIG` environment variable
(TensorFlow's, set by hand, by Ray Train or by Kubernetes): whether this process is the chief,
how many processes there are, and this one's place. Plain JSON reading, checked before
TensorFlow sees it (TensorFlow answers a typo with a traceback, or waits forever)."""

from __future__ import annotations

import json
import os
from typing import Any

from imgclf.infra.errors import ConfigError

EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def tf_config() -> dict[str, Any] | None:
    """TF_CONFIG, parsed and checked, or None when it is not set. Raises ConfigError (one
    line, with an example) when it is not JSON, names no workers, has an address without a
    port, or a task that is not in the cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        members = cluster[kind]
    except (ValueError, KeyError, TypeError) as exc:
        why = f"is not JSON ({exc})" if isinstance(exc, ValueError) else f"has no {exc}"
        raise ConfigError(f"TF_CONFIG {why}: it must look like {EXAMPLE}") from None
    if not 0 <= index < len(members):
        raise ConfigError(
            f"TF_CONFIG: task index {index} is not in the cluster's {len(members)} "
            f"{kind}(s): indices run from 0 to {len(members) - 1}"
        )
    for address in (a for group in cluster.values() for a in group):
        if not str(address).rpartition(":")[2].isdigit():
            raise ConfigError(f"TF_CONFIG: address {address!r} has no port: use host:port")
    return config


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a worker other than worker 0 (or a non-chief)."""
    config = tf_config()
    if config is None:
        return True
    kind, index = config["task"]["type"], int(config["task"]["index"])
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config["cluster"])


def cluster_size() -> int:
    """The number of processes TF_CONFIG names (workers and a chief), 1 without it."""
    config = tf_config()
    if config is None:
        return 1
    cluster = config["cluster"]
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def worker_index() -> int:
    """This process's place in the cluster TF_CONFIG names: a chief first, then the workers
    by index (0 without TF_CONFIG)."""
    config = tf_config()
    if config is None:
        return 0
    task = config["task"]
    if task["type"] == "chief":
        return 0
    return int(task["index"]) + len(config["cluster"].get("chief", []))


def describe() -> str:
    """This process in its cluster, for messages: e.g. `worker 1 of 2 (127.0.0.1:2001)`."""
    config = tf_config()
    if config is None:
        return "one process"
    kind, index = config["task"]["type"], int(config["task"]["index"])
    return f"{kind} {index} of {cluster_size()} ({config['cluster'][kind][index]})"
