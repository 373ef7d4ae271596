"""``python -m gpool``: the same as the ``gpool`` command."""

import sys

from ._cli.main import main

sys.exit(main())
