"""``python -m robustsdd.cli ...``: the same as the ``robustsdd`` command."""

import sys

from . import main

sys.exit(main())
