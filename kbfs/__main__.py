import sys

from kbfs.cli import main

sys.exit(main())
