"""`imgclf-app`: the Streamlit app served on 127.0.0.1 with the app's settings, from any folder.

`streamlit run app.py` reads `.streamlit/config.toml` from the working folder only: started
anywhere else it listened on every network interface. This command passes the settings
themselves (address, upload limit, no usage statistics, no file watcher, error details hidden
from the browser), so the app is local unless `--address` says otherwise; on a non-loopback
address the app refuses paths of the server unless IMGCLF_DATA_ROOTS names folders
(`imgclf.ui.exposure`). TensorFlow's C++ start-up lines are kept off the terminal
(`infra.console.quiet_tensorflow`), as for the other commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.console import quiet_tensorflow
from imgclf.ui.catalog import RUNS_ENV

SCRIPT = Path(__file__).with_name("streamlit_app.py")
# What the repository's .streamlit/config.toml sets, for an app started from anywhere.
SETTINGS = {
    "server.maxUploadSize": "25",  # MB per file: a 12-megapixel JPEG is 3-8 MB
    "server.headless": "true",
    "server.fileWatcherType": "none",
    "browser.gatherUsageStats": "false",
    "client.showErrorDetails": "type",
    "client.toolbarMode": "minimal",
}


def streamlit_args(address: str, port: int) -> list[str]:
    """The `streamlit run` arguments of the app on `address`:`port`."""
    flags = {"server.address": address, "server.port": str(port), **SETTINGS}
    return ["run", str(SCRIPT), *(f"--{key}={value}" for key, value in flags.items())]


def main(argv: list[str] | None = None) -> int:
    """`imgclf-app [--address A] [--port P] [--runs DIR] [--verbose]`; serves until stopped."""
    parser = ArgumentParser(
        prog="imgclf-app",
        description="Serve imgclf's app (Streamlit) on this machine: http://127.0.0.1:8501/",
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only); on any other "
        "the app reads no server folder unless IMGCLF_DATA_ROOTS names them (docs/app.md)",
    )
    parser.add_argument("--port", type=int, default=8501, help="the port (default 8501)")
    parser.add_argument("--runs", help=f"the runs folder (default ${RUNS_ENV}, else runs/)")
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's own start-up log lines"
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: a port is 1 to 65535")
    if args.runs:
        os.environ[RUNS_ENV] = str(Path(args.runs).resolve())
    quiet_tensorflow(args.verbose)
    from streamlit.web import cli

    return cli.main(streamlit_args(args.address, args.port), prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())
