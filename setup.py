"""A shim for tools that expect setup.py: all metadata lives in pyproject.toml."""

from setuptools import setup

setup()
