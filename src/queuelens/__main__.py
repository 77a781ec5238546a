"""``python -m queuelens`` is the ``queuelens`` command."""

import sys

from queuelens.cli import main

sys.exit(main())
