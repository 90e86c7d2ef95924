"""Helpers for tests that run ``tycoon up`` (or another long-running command) as a process."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Stop ``proc`` as Ctrl-C does (SIGINT); kill it if it has not stopped within ``timeout``
    seconds. Returns what it printed (empty if its output was not piped)."""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""
