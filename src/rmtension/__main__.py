"""`python -m rmtension ...`: the same as the `rmtension` command (and what `accelerate launch -m rmtension` runs)."""

import sys

from rmtension.cli import main

if __name__ == "__main__":  # `import rmtension.__main__` alone runs nothing
    sys.exit(main())
