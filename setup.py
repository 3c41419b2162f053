"""The compiled fused row renderer (src/cdcstream/sources/postgres/_fused.c) and the mapping workers' compiled
answers (src/cdcstream/workers/_frames.c) as optional extensions: a machine without a C compiler still builds and
installs the package, which then runs the pure-Python paths (fused.py, frames.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cdcstream.sources.postgres._fused",
            ["src/cdcstream/sources/postgres/_fused.c"],
            optional=True,
        ),
        Extension("cdcstream.workers._frames", ["src/cdcstream/workers/_frames.c"], optional=True),
    ]
)
