"""``python -m vpnlab``: the same as the ``vpnlab`` command."""

import sys

from vpnlab.cli import main

sys.exit(main())
