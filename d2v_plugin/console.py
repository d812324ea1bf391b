"""Shared console-script plumbing.

``main(argv)`` returns a Python result and leaves logging alone, for in-process callers
(tests, notebooks) that configure it themselves. The console script (``cli()`` ->
``run``) configures logging from ``--log-level`` (replacing the handler that importing
fairseq's text-to-speech tasks installs) and turns user errors into one line and exit 1.
``Progress`` is the live progress line every command shows on work longer than a few seconds.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Optional, Sequence, TextIO, Tuple, Type

PROGRESS_AFTER_SECONDS = 2.0  # work that ends sooner shows no progress line
PROGRESS_EVERY_SECONDS = 1.0  # at most one redraw per interval on a terminal
PROGRESS_LOG_EVERY_SECONDS = 30.0  # at most one line per interval in a log file


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


class Progress:
    """A live one-line progress display on stderr, in the style of the demo's training line::

        [#########.....................] extracting features 120/400 utterances 14s

    Nothing is shown for work that ends within ``PROGRESS_AFTER_SECONDS``; after that the line
    is redrawn in place (``\\r``) at most every ``PROGRESS_EVERY_SECONDS`` on a terminal, or
    written as a new line at most every ``PROGRESS_LOG_EVERY_SECONDS`` when stderr is a file.
    ``total=None`` (unknown) shows the count without a bar. ``enabled=False`` counts silently,
    for in-process callers that want no output.
    """

    def __init__(self, what: str, total: Optional[int] = None, unit: str = "",
                 enabled: bool = True, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._drawn_at: Optional[float] = None
        self._drawn_done = -1
        self._closed = False
        self._in_place = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = self.clock()
        if now - self.started < PROGRESS_AFTER_SECONDS:
            return
        every = PROGRESS_EVERY_SECONDS if self._in_place else PROGRESS_LOG_EVERY_SECONDS
        if self._drawn_at is not None and now - self._drawn_at < every:
            return
        self._draw(now)

    def close(self) -> None:
        """Show the final count (if the work was long enough to be shown) and end the line."""
        if self._closed:
            return
        self._closed = True
        now = self.clock()
        if self.enabled and (self._drawn_at is not None or now - self.started >= PROGRESS_AFTER_SECONDS):
            if self._drawn_done != self.done:
                self._draw(now)
            if self._in_place:
                self.stream.write("\n")
                self.stream.flush()

    def line(self, now: Optional[float] = None) -> str:
        now = self.clock() if now is None else now
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        bar = ""
        if self.total:
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] "
        unit = f" {self.unit}" if self.unit else ""
        return f"{bar}{self.what} {count}{unit} {now - self.started:.0f}s"

    def _draw(self, now: float) -> None:
        text = self.line(now)
        self.stream.write(f"\r{text}" if self._in_place else f"{text}\n")
        self.stream.flush()
        self._drawn_at, self._drawn_done = now, self.done

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
