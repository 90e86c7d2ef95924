"""Prometheus metrics of Tycoon's services (see docs/operations.md#metrics).

This package's ``__init__`` imports nothing: :mod:`tycoon.metrics.histogram` is pure and
used on the services' hot path; :mod:`tycoon.metrics.collectors` and
:mod:`tycoon.metrics.server` import ``prometheus_client`` and run only at scrape time.
"""
