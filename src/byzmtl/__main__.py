"""``python -m byzmtl`` runs the command line (a Ctrl-C while it is imported ends as one in a
command does: one line, status 130)."""

import sys

try:
    from byzmtl.cli import main
except KeyboardInterrupt:  # pragma: no cover - a narrow window: the module is stdlib-light
    print("byzmtl: interrupted; nothing was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
