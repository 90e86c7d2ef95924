"""Build the optional C helper (batch signature checks); everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and Tycoon verifies
one envelope at a time (tycoon.bus.batch falls back to PyNaCl).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tycoon.bus._batchverify", ["tycoon/bus/_batchverify.c"],
                             optional=True)])
