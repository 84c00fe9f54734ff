"""Entry point of the launcher process: ``python -m rewind.launcher --main NAME``."""

import os
import sys

from rewind.launcher.main import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], os.environ))
