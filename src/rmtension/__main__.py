"""`python -m rmtension ...`: the same as the `rmtension` command (and what `accelerate launch -m rmtension` runs)."""

import sys

from rmtension.cli import main

sys.exit(main())
