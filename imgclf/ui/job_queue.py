"""The job queue of one runs folder: validated configs waiting in `<runs root>/.jobs/queue.json`
to be trained one after the other (the Lessons page queues a pair or triple). `TrainingJob` holds
the lock around every change and starts what `pop` returns; nothing here starts a process."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.config import dump_config, load_config
from imgclf.infra import bounded
from imgclf.infra.errors import UserError

QUEUE_FILE = "queue.json"


class JobQueue:
    """Configs waiting in `folder/queue.json`, each saved as `folder/queued-*.yaml` when added
    and deleted once popped. Not locked itself: the caller holds the job's lock."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _ours(self, value: object) -> Path | None:
        """A queue entry's config file, only if it is one this queue wrote (`queued-*.yaml`
        in its folder)."""
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)
        ours = path.parent == self.folder and path.name.startswith("queued-")
        return path if ours and path.suffix == ".yaml" else None

    def _read(self) -> list[dict[str, str]]:
        """The entries; anything else in queue.json (a hand edit, a broken file) is dropped:
        never a path outside the folder, which the queue deletes once read."""
        try:
            items = bounded.read_json(self.folder / QUEUE_FILE)
        except (OSError, ValueError):
            return []
        if not isinstance(items, list):
            return []
        return [
            {"name": i["name"], "config": i["config"]}
            for i in items
            if isinstance(i, dict)
            and isinstance(i.get("name"), str)
            and self._ours(i.get("config")) is not None
        ]

    def _write(self, items: list[dict[str, str]]) -> None:
        runs.write_json(self.folder / QUEUE_FILE, items)

    def names(self) -> list[str]:
        """The names of the configs waiting, in order."""
        return [item["name"] for item in self._read()]

    def add(self, configs: list[Any]) -> None:
        """Append validated Configs; a name already waiting is not queued twice (a button
        pressed twice)."""
        items = self._read()
        waiting = {item["name"] for item in items}
        for config in configs:
            if config.name in waiting:
                continue
            waiting.add(config.name)
            path = self.folder / f"queued-{time.time_ns()}-{config.name}.yaml"
            runs.write_text(path, dump_config(config))
            items.append({"name": config.name, "config": str(path)})
        self._write(items)

    def pop(self) -> tuple[str, Any] | None:
        """The first entry, removed: (name, its Config), or (name, the exception) when its file
        no longer loads as a config; None when the queue is empty."""
        items = self._read()
        if not items:
            return None
        item = items.pop(0)
        self._write(items)
        path = Path(item["config"])
        try:
            return item["name"], load_config(path)
        except (UserError, OSError) as exc:
            return item["name"], exc
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Empty the queue and delete the waiting config files."""
        for item in self._read():
            with contextlib.suppress(OSError):
                Path(item["config"]).unlink(missing_ok=True)
        self._write([])
