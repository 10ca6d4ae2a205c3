"""``python -m gateway.sandbox``: the platform sandbox as its own process."""

import sys

from gateway.sandbox.server import main

sys.exit(main())
