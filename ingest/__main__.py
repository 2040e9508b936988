"""`python -m ingest`: the same entry point as the `loginvault` command."""

from ingest.cli import main

raise SystemExit(main())
