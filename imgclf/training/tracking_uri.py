"""The MLflow tracking URI of `train.mlflow`: which store it names (`scheme`), whether MLflow can
use it (`check_uri`, before MLflow or TensorFlow is imported), where a plain folder's SQLite store
and artifacts go (`store`), and the URI as shown to people (`shown`, without a password)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from imgclf.infra.errors import ConfigError

STORE_DB = "mlflow.db"  # a plain-folder store: <folder>/mlflow.db, artifacts in <folder>/artifacts
STORE_ARTIFACTS = "artifacts"
# The tracking-store schemes MLflow knows (mlflow/tracking/_tracking_service/utils.py), and
# plugins' schemes from the entry points of this group.
SCHEMES = frozenset({"file", "sqlite", "postgresql", "mysql", "mssql", "http", "https",
                     "databricks", "databricks-uc", "uc"})  # fmt: skip
PLUGIN_GROUP = "mlflow.tracking_store"


def scheme(uri: str) -> str:
    """The tracking-store scheme of `uri` as MLflow reads it: "" for a plain path (a Windows
    drive letter too), `postgresql` for `postgresql+psycopg2://...`."""
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    found = urllib.parse.urlparse(uri).scheme.lower()
    return "" if len(found) == 1 else found.split("+")[0]


def check_uri(uri: str) -> None:
    """ConfigError (one line) when MLflow cannot use `uri` as a tracking store."""
    from importlib.metadata import entry_points

    if not uri.strip():
        raise ConfigError("train.mlflow is empty: give a folder, or a tracking URI")
    found = scheme(uri)
    plugins = {ep.name for ep in entry_points(group=PLUGIN_GROUP)} if found else set()
    if found and found not in SCHEMES | plugins:
        raise ConfigError(
            f"train.mlflow={uri!r}: MLflow knows no tracking store {found!r}; use a folder "
            "(a SQLite store in it), sqlite:///..., http(s)://host:port, postgresql://..., "
            "mysql://... or databricks"
        )
    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("1", "true")
    if found == "file" and not allowed:
        raise ConfigError(
            f"train.mlflow={uri!r}: MLflow's file store is retired (it raises unless "
            "MLFLOW_ALLOW_FILE_STORE=true); give the folder itself (a SQLite store in it)"
        )


def store(uri: str) -> tuple[str, str | None]:
    """(the tracking URI, the artifact location of a new experiment, or None for MLflow's):
    a plain folder becomes `sqlite:///<abs folder>/mlflow.db` with artifacts/ beside it; a
    SQLite file's artifacts go beside it too; other URIs are MLflow's to place."""
    found = scheme(uri)
    if found == "":
        folder = Path(uri).expanduser().absolute()
        return f"sqlite:///{folder / STORE_DB}", (folder / STORE_ARTIFACTS).as_uri()
    if found == "sqlite" and ":///" in uri:
        db = uri.split(":///", 1)[1].split("?", 1)[0]
        if db and db != ":memory:":
            return uri, (Path(db).absolute().parent / STORE_ARTIFACTS).as_uri()
    return uri, None


def shown(uri: str) -> str:
    """`uri` without a password (`user:***@host`)."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
