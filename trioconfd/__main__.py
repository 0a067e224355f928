"""``python -m trioconfd``: the command line."""

from .cli import main

raise SystemExit(main())
