"""Fakes for tests: stand-ins for outside systems that the tests (never the services) use.

- :mod:`tycoon.testing.fake_xapi`: an in-process XAPI server for the Xen driver.
"""
