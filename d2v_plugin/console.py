"""Shared console-script plumbing.

``main(argv)`` returns a Python result and leaves logging alone, for in-process callers
(tests, notebooks) that configure it themselves. The console script (``cli()`` ->
``run``) configures logging from ``--log-level`` (replacing the handler that importing
fairseq's text-to-speech tasks installs) and turns user errors into one line and exit 1.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence, Tuple, Type


class UserInputError(ValueError):
    """Bad input the user can fix (files, transcripts, arguments): reported without a traceback."""


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        force=True)  # importing fairseq may already have configured logging


def run(main: Callable[[Optional[Sequence[str]]], object], prog: str,
        errors: Tuple[Type[BaseException], ...] = (UserInputError, FileNotFoundError)) -> int:
    """Exit status of ``main()``: 0, or 1 with ``prog: error: ...`` on stderr for user errors."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level", default="INFO")
    setup_logging(pre.parse_known_args()[0].log_level)
    try:
        main(None)
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0
