"""``python -m dlas_dse`` runs the command-line interface."""

import sys

from dlas_dse.cli import main

if __name__ == "__main__":
    sys.exit(main())
