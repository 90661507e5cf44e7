"""`python -m vaediff` is the `vaediff` command (so `accelerate launch -m vaediff ...` works)."""

import sys

from vaediff.cli import main

sys.exit(main())
