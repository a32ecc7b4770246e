"""``python -m byzmtl`` runs the command line."""

import sys

from byzmtl.cli import main

sys.exit(main())
