"""``python -m bench [--smoke] [--out DIR]``: see ``bench.run``."""

import sys

from bench.run import main

sys.exit(main())
