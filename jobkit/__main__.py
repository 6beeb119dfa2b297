"""``python -m jobkit`` runs the ``jobkit`` command."""
import sys

from jobkit.cli import main

sys.exit(main())
