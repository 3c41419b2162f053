"""The compiled fused row renderers (src/cdcstream/sources/postgres/_fused.c, src/cdcstream/sources/mysql/_fused.c),
the mapper's records of a run (src/cdcstream/mapping/_splice.c), the sink's PutRecords body builder
(src/cdcstream/sinks/_putrecords.c) and the mapping workers' compact answers (src/cdcstream/workers/_frames.c) as
optional extensions: a machine without a C compiler still builds and installs
the package, which then runs the pure-Python path (each source's fused.py, sinks/putrecords.py and workers/frames.py
say so)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cdcstream.sources.postgres._fused",
            ["src/cdcstream/sources/postgres/_fused.c"],
            depends=["src/cdcstream/_fused_json.h"],
            optional=True,
        ),
        Extension(
            "cdcstream.sources.mysql._fused",
            ["src/cdcstream/sources/mysql/_fused.c"],
            depends=["src/cdcstream/_fused_json.h"],
            optional=True,
        ),
        Extension(
            "cdcstream.sinks._putrecords",
            ["src/cdcstream/sinks/_putrecords.c"],
            depends=["src/cdcstream/_fused_json.h"],
            optional=True,
        ),
        Extension("cdcstream.mapping._splice", ["src/cdcstream/mapping/_splice.c"], optional=True),
        Extension("cdcstream.workers._frames", ["src/cdcstream/workers/_frames.c"], optional=True),
    ]
)
