"""`python -m omnidlm ...` (also what `torchrun -m omnidlm ...` runs)."""

import sys

from .cli import main

sys.exit(main())
