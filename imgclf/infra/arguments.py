"""The command lines' argument parser: argparse (standard library), with a usage mistake
answered as one line on stderr, exit code 2, like every other bad input (argparse's own
`error` prints the whole usage block first, several lines for a long command)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line: `error: <what> (see <prog> --help)`,
    then exit code 2. `--help` prints the full usage as usual."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")  # argparse writes it
