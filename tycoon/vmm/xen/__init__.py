"""Xen through XAPI: the Xen VMM driver (driver.py), port forwarding (ports.py) and a stand-in
XAPI server for tests and demos (fake_xapi.py)."""
