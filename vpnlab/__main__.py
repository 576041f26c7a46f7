"""``python -m vpnlab``: the same as the ``vpnlab`` command."""

import sys

from .cli import main

sys.exit(main())
