"""Build the optional C extension; pyproject.toml holds the package metadata."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("rewind.memory._inplace", ["lib/rewind/memory/_inplace.c"], optional=True)
    ]
)
