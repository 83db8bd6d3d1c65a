"""``python -m rnnrt.cli``: the ``rnnrt`` command line."""

import sys

from rnnrt.cli import main

sys.exit(main())
