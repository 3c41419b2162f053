"""``python -m cdcstream`` runs the command line."""

from cdcstream.cli import main

raise SystemExit(main())
