"""User-facing errors: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (file, columns, ids, arguments). Its message is the whole story."""


def run_cli(main: Callable[[], int | None]) -> None:
    """Call a CLI body; turn `UserError` into `error: …` on stderr and exit status 2."""
    try:
        code = main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one `error: …` line (usage stays available through --help)."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")
