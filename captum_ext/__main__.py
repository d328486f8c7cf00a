"""``python -m captum_ext ...`` runs the ``captum-ext`` command (``torchrun -m captum_ext`` too)."""

import sys

from captum_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
