"""``python -m fasthost``: see fasthost.cli."""

import sys

from fasthost.cli import main

sys.exit(main())
