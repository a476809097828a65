"""Start the hub: `python run.py` (settings come from the environment; see README)."""

import sys

from hub.wiring.main import main

if __name__ == "__main__":
    sys.exit(main())
