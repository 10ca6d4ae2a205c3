import sys

from gateway.cli import main

if __name__ == "__main__":  # guarded: mapping worker processes re-import the main module
    sys.exit(main())
