"""``python -m ex4d.train [prepare|train|masks] ...``; no command = ``train`` (for ``accelerate launch -m ex4d.train``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
