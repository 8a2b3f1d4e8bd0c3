"""``python -m kbfs.devserver ARGS``."""

import sys

from kbfs.devserver.serve import main

sys.exit(main(sys.argv[1:]))
