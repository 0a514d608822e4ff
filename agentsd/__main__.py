"""``python -m agentsd``: the ``agentsd`` command."""

import sys

from agentsd.cli import main

if __name__ == "__main__":
    sys.exit(main())
