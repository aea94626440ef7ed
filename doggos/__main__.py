"""`python -m doggos`: the command-line interface."""

import sys

from doggos.cli import main

sys.exit(main())
