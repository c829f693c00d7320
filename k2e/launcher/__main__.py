"""``python -m k2e.launcher``: the same as ``k2e run``."""

import sys

from k2e.launcher.stack import main

if __name__ == "__main__":
    sys.exit(main())
