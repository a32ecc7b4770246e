"""``python -m byzmtl`` runs the command line (a Ctrl-C while it is imported ends as one in a
command does: one line, status 130) and leaves at once when the command has ended
(:func:`byzmtl.cli.leave`)."""

import sys

try:
    from byzmtl.cli import leave, main
except KeyboardInterrupt:  # pragma: no cover - a narrow window: the module is stdlib-light
    print("byzmtl: interrupted; nothing was written", file=sys.stderr)
    sys.exit(130)

leave(main())
