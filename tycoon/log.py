"""Logging, configured once: JSON lines when stderr is not a terminal, console text when it is.

With a log file (``configure_logging(file=...)`` or ``TYCOON_LOG_FILE``, as ``tycoon up``
sets for each service) the lines go to that file instead, rotated by size: at most
``TYCOON_LOG_MAX_BYTES`` (default 10 MB) per file and ``TYCOON_LOG_BACKUPS`` (default 5)
older files, ``name.log.1`` being the newest of those.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Any

import structlog

_configured = False


MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


def configure_logging(level: str = "info", *, json: bool | None = None,
                      file: str | None = None, max_bytes: int | None = None,
                      backups: int | None = None) -> None:
    """Configure structlog for the whole process (idempotent; the last call wins).

    ``file`` (default: ``$TYCOON_LOG_FILE``): write JSON lines there, rotated by size."""
    global _configured
    file = file if file is not None else os.environ.get("TYCOON_LOG_FILE") or None
    sink: Any = _CurrentStderr()
    if file is not None:
        sink = RotatingSink(file, max_bytes or int(os.environ.get("TYCOON_LOG_MAX_BYTES",
                                                                  MAX_BYTES)),
                            backups if backups is not None else
                            int(os.environ.get("TYCOON_LOG_BACKUPS", BACKUPS)))
    as_json = (file is not None or not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sink),
        cache_logger_on_first_use=False,
    )
    _configured = True


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the moment of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class RotatingSink:
    """A text file that rotates by size (standard library ``RotatingFileHandler``): what
    structlog prints to when a process logs to a file."""

    def __init__(self, path: str, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=max(1, backups), encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        return len(text)

    def flush(self) -> None:
        self.handler.flush()


def get_logger(name: str, **context: Any) -> Any:
    """A structlog logger bound to a component name (configures defaults on first use)."""
    if not _configured:
        configure_logging()
    return structlog.get_logger(component=name, **context)


class LogLimiter:
    """Decides which repeated events get a log line: at most one per (key, code) per
    ``interval_s`` (carrying the count since the last line) and at most ``max_lines``
    lines per interval in all, so a flood of refusals cannot fill a disk (pure: the
    caller passes the time)."""

    def __init__(self, interval_s: float = 10.0, *, max_lines: int = 50,
                 max_keys: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_lines = max_lines
        self.max_keys = max_keys
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._window = float("-inf")
        self._lines = 0
        self.suppressed = 0
        """Events not logged because the overall budget of the interval was spent."""

    def admit(self, key: str, code: str, now: float) -> int:
        """0: do not log this event; n > 0: log it as the n-th since the last line."""
        if now - self._window >= self.interval_s:
            self._window, self._lines = now, 0
        last, count = self._last.get((key, code), (float("-inf"), 0))
        if now - last < self.interval_s:
            self._remember(key, code, last, count + 1, now)
            return 0
        if self._lines >= self.max_lines:
            self.suppressed += 1
            return 0
        self._lines += 1
        self._remember(key, code, now, 0, now)
        return count + 1

    def take_suppressed(self) -> int:
        """Events left unlogged for want of budget since the last call (and reset): the
        next line that is logged carries it."""
        n, self.suppressed = self.suppressed, 0
        return n

    def _remember(self, key: str, code: str, last: float, count: int, now: float) -> None:
        if (key, code) not in self._last and len(self._last) >= self.max_keys:
            cutoff = now - self.interval_s
            self._last = {k: v for k, v in self._last.items() if v[0] >= cutoff}
            if len(self._last) >= self.max_keys:
                self._last.clear()
        self._last[(key, code)] = (last, count)
