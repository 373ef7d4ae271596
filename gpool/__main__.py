"""``python -m gpool``: the same as the ``gpool`` command."""

import sys

from .cli import main

sys.exit(main())
