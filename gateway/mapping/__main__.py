"""``python -m gateway.mapping FILE``: see gateway.mapping.show."""

import sys

from gateway.mapping.show import main

raise SystemExit(main(sys.argv[1:]))
