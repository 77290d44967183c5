"""Which folders of the server the app may read when someone types a path into it.

Three pages take a path on the machine the app runs on: the Data page ("Folder or CSV file on the
server"), the Train form's folder, and the Classify page's folder batch. On the machine's own
loopback address (how `imgclf-app` and the repository's `.streamlit/config.toml` serve it) the
person typing is the machine's user, and any folder they can read is allowed. Served on any other
address, anyone who reaches the port could list folders and view images the server's user can
read, so those fields refuse every path unless the operator names the folders to allow:

    IMGCLF_DATA_ROOTS=/data/photos:/srv/datasets imgclf-app --address 0.0.0.0

A path is resolved (`~`, `..` and symbolic links followed, `os.path.realpath`) before it is
checked, so a typed path through a link inside an allowed folder cannot lead outside it; what
a folder or CSV source then lists is confined to IMGCLF_DATA_ROOTS too (`imgclf.data.roots`).
The dataset builder's own folder (`$IMGCLF_DATA`, else `datasets/`) is always allowed: the app
writes it. Deploying on a
network is in docs/app.md (behind a reverse proxy with authentication).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from imgclf.data.roots import ROOTS_ENV, data_root, inside, resolved
from imgclf.infra.errors import UserError


def served_address() -> str:
    """The address the Streamlit server listens on ("" when it listens on every interface)."""
    import streamlit as st

    return str(st.get_option("server.address") or "")


def is_loopback(address: str) -> bool:
    """True for an address only this machine reaches: 127.0.0.0/8, ::1 or `localhost`; False
    for "" (every interface), 0.0.0.0, :: and any other address or host name."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_roots(address: str | None = None) -> list[Path] | None:
    """The folders paths may lie in (resolved), or None for any folder (loopback and no
    IMGCLF_DATA_ROOTS). `address`: the served address (default: the running server's)."""
    named = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    if not named and is_loopback(served_address() if address is None else address):
        return None
    return [resolved(p) for p in [*named, str(data_root())]]


def server_path(text: str, address: str | None = None) -> Path:
    """The path typed as `text`, resolved, if the app may read it; else UserError saying why
    and what the operator can do. An empty `text` is refused too."""
    text = text.strip()
    if not text:
        raise UserError("enter a path on the machine the app runs on")
    path = resolved(text)
    roots = allowed_roots(address)
    if roots is None or inside(path, roots):
        return path
    served = (served_address() if address is None else address) or "every network interface"
    if os.environ.get(ROOTS_ENV, "").strip():
        where = ", ".join(str(r) for r in roots)
        raise UserError(f"{path} is outside the folders this app may read ({where})")
    raise UserError(
        f"reading folders of the server is switched off: the app is served on {served}, not "
        f"only this machine; the operator can allow folders with {ROOTS_ENV}=/data/a:/data/b, "
        "or serve on 127.0.0.1 (imgclf-app)"
    )
