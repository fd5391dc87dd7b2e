"""``jobs``: the heavy-jobs HTTP API from a terminal.

    jobs [--url URL] [--api-key KEY] [--json] submit N [--wait]
    jobs status ID | jobs watch ID | jobs cancel ID | jobs list [--status S] [--client C]

``client`` talks HTTP, ``render`` draws tables and the live progress bar, ``main`` parses
the command line and maps outcomes to exit statuses. The package is a client only: it
knows the API's documented shapes, not the server's code.
"""

__version__ = "0.1.0"
