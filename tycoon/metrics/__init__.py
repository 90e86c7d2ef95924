"""Prometheus metrics of Tycoon's services (see docs/operations.md#metrics).

This package's ``__init__`` imports nothing. The services count latencies into the pure
:mod:`tycoon.bus.histogram` on their hot path; :mod:`tycoon.metrics.collectors` and
:mod:`tycoon.metrics.server` import ``prometheus_client`` and run only at scrape time.
"""
