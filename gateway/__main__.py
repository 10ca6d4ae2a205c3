import sys

from gateway.startup import stop_on_sigterm

if __name__ == "__main__":  # guarded: mapping worker processes re-import the main module
    stop_on_sigterm()  # before the command line's imports: they take a second or more

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
