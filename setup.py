"""Build the C core with cffi; all metadata lives in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["csrc/build_core.py:ffibuilder"])
