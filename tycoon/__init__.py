"""Tycoon: a market for a cluster's resources on a NATS bus."""

__version__ = "0.1.0"
