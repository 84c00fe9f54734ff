"""Build the optional C extension; pyproject.toml holds the package metadata."""

from setuptools import Extension, setup

# One extension module from one source file per concern; _inplace.h lists them.
INPLACE = "lib/rewind/memory/_inplace"
SOURCES = ["", "_maps", "_inject", "_track", "_kstate", "_checkpoint"]

setup(
    ext_modules=[
        Extension(
            "rewind.memory._inplace",
            [f"{INPLACE}{part}.c" for part in SOURCES],
            depends=[f"{INPLACE}.h"],
            extra_compile_args=["-fvisibility=hidden"],
            optional=True,
        )
    ]
)
