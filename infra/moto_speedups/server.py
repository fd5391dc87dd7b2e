"""The server's per-request work that does not depend on the request.

What moto 5.2.5 repeats for every request or every event, and what replaces it here:

- ``DomainDispatcherApplication.get_backend_for_host`` (``moto/moto_server/
  werkzeug_app.py``) checks the request's host against ``backends.list_of_moto_modules()``,
  a generator that lists moto's package directory and calls ``os.path.isdir`` on each of
  its two hundred entries: about a tenth of the emulator's CPU while the local stack runs
  jobs (profiled with py-spy), and done under the dispatcher's lock, so every other
  request waits for it. The directory does not change while the server runs: here the
  list is read once, on first use, and the same names are answered from then on.
- ``EventTemplateParser.parse`` (``moto/events/utils.py``), run for every event a rule
  sends to each target, calls ``jsonpath_ng.ext.parse`` on the target's input paths (the
  default ones when it has no InputTransformer), which builds a new parser, grammar tables
  included, each time: another tenth of the CPU while events flow. A parsed path is an
  immutable expression (``find`` reads it, never changes it), so here each path text is
  parsed once and its expression reused (``functools.lru_cache``, bounded). jsonpath-ng is
  pinned beside moto in requirements-dev.txt.

Patched: ``moto.backends.list_of_moto_modules`` (the dispatcher reads it from the module
at each call) and ``jsonpath_ng.ext.parse`` (``EventTemplateParser.parse`` imports it at
each call). Same answers: tested against moto as released in
``tests/infra/test_moto_speedups_server.py``.
"""

from __future__ import annotations

import functools

import jsonpath_ng.ext
from moto import backends

from infra.moto_speedups.patching import Patches

# Distinct path texts kept parsed: rules' input paths are few (each target's InputPathsMap).
PARSED_PATHS = 256


def apply(patches: Patches) -> None:
    listing = backends.list_of_moto_modules
    patches.replace(backends, "list_of_moto_modules", functools.cache(lambda: tuple(listing())))
    parse = functools.lru_cache(maxsize=PARSED_PATHS)(jsonpath_ng.ext.parse)
    patches.replace(jsonpath_ng.ext, "parse", parse)
