"""Xen through XAPI: the Xen VMM driver (driver.py) and port forwarding (ports.py). A stand-in
XAPI server for tests is :mod:`tycoon.testing.fake_xapi`."""
