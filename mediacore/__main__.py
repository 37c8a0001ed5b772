"""``python -m mediacore`` is the same program as the ``mediacore`` command."""

from mediacore.cli import main

raise SystemExit(main())
