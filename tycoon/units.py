"""Units shared by every package."""

from __future__ import annotations

NS = 1_000_000_000
"""Nanoseconds in a second: times on the wire and in the cores are integer nanoseconds."""
