"""``python -m lipinverse.cli``: the ``lipinverse`` command."""

import sys

from . import main

sys.exit(main())
