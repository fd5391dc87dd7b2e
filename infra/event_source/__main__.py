"""``python -m infra.event_source``: run the event sources of a Chalice project."""

import sys

from .runner import main

# Guarded although multiprocessing's spawn never re-runs a package's __main__ in a child.
if __name__ == "__main__":
    sys.exit(main())
