"""``python -m runtel`` runs the command line."""

import sys

from runtel.cli import main

sys.exit(main())
