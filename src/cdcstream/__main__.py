"""``python -m cdcstream`` and the ``cdcstream`` command: the command line, with ``run`` catching stop signals
from its first instant (runtime/signals.py) before the heavier imports."""

from __future__ import annotations

import sys

from cdcstream.runtime.signals import catch_early


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        catch_early()
    from cdcstream.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
