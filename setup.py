"""The compiled fused row renderer (src/cdcstream/sources/postgres/_fused.c) as an optional extension: a machine
without a C compiler still builds and installs the package, which then runs the pure-Python path (fused.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cdcstream.sources.postgres._fused",
            ["src/cdcstream/sources/postgres/_fused.c"],
            optional=True,
        )
    ]
)
