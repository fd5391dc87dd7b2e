"""One instance of a function: Lambda's Python runtime loop, in an interpreter of its own.

Run by ``instances.Instance`` as ``python -I bootstrap.py FD`` (isolated: no
``PYTHONPATH``, no user site, no working directory on ``sys.path``), with the function's
environment and its task root as working directory. FD is the instance's end of a
``multiprocessing`` connection; the first message on it is the setup (project dir,
handler, function name, memory, timeout, import world), then one ``(event, request_id)``
per invocation until the runner closes it.

Before the app is imported, the import guard makes the instance's importable world
what Lambda's is: the standard library, plus only the files ``deployment.import_world``
listed (the deployment package and the runtime's boto3). Anything else installed in the
developer's environment (moto, requests, pytest, the project's ``infra`` or ``jobs_cli``)
fails to import with ModuleNotFoundError, as on AWS.

This file imports the standard library only, and nothing of the package around it: it
runs as a script, outside it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, NamespaceLoader
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

log = logging.getLogger("bootstrap")

# Modules that must survive the purge of what the interpreter imported before the guard:
# the script itself and the interpreter's own entry points.
_KEPT_MODULES = {"__main__", "__mp_main__", "builtins", "sys"}


class PackageImportGuard(MetaPathFinder):
    """A meta path finder that wraps the interpreter's own finders and hides every module
    found outside the allowed world, so importing it fails as if it were not installed.

    Standard library modules are always allowed (Lambda's runtime has them all).
    ``files`` are allowed module files, ``directories`` are allowed whole (``vendor``
    and ``chalicelib``); both hold resolved absolute paths. A module hidden from one
    location may still be found in ``fallback_paths`` (the package's ``vendor/``, which
    is zipped beside app.py but comes last on the local ``sys.path``).
    """

    def __init__(
        self,
        finders: Sequence[Any],
        files: Iterable[str],
        directories: Iterable[str],
        fallback_paths: Sequence[str] = (),
    ) -> None:
        self._finders = list(finders)
        self._files = frozenset(files)
        self._directories = tuple(os.path.join(d, "") for d in directories)
        # Namespace packages have no file: allow one whose directory holds allowed files.
        self._file_parents = frozenset(
            os.path.dirname(path) for f in self._files for path in _ancestors(f)
        )
        self._fallback_paths = list(fallback_paths)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        spec = self._find(fullname, path, target)
        if spec is None or self.allows(fullname, spec):
            return spec
        if path is None:  # a top-level name hidden here may be in vendor/
            for finder in self._finders:
                find = getattr(finder, "find_spec", None)
                fallback = find(fullname, self._fallback_paths, target) if find else None
                if fallback is not None and self.allows(fullname, fallback):
                    return fallback  # type: ignore[no-any-return]
        return None  # not in the package: ModuleNotFoundError, as on Lambda

    def _find(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> ModuleSpec | None:
        for finder in self._finders:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                return spec  # type: ignore[no-any-return]
        return None

    def allows(self, fullname: str, spec: ModuleSpec) -> bool:
        """Whether the module ``spec`` describes belongs to the allowed world."""
        if fullname.partition(".")[0] in sys.stdlib_module_names:
            return True
        # sysconfig's build data (zoneinfo reads it): the standard library's own module,
        # named per platform, so sys.stdlib_module_names cannot list it.
        if fullname.startswith("_sysconfigdata_"):
            return True
        if spec.origin in ("built-in", "frozen"):
            return True
        if spec.origin and spec.has_location:
            return self.allows_path(spec.origin)
        if isinstance(spec.loader, NamespaceLoader):
            # A namespace package: allowed if one of its directories holds allowed modules.
            return any(
                os.path.realpath(location) in self._file_parents
                or self.allows_path(os.path.join(location, ""))
                for location in spec.submodule_search_locations or ()
            )
        # A module made by a loader rather than read from a file (six.moves): allowed
        # when the loader's own code is.
        maker = sys.modules.get(type(spec.loader).__module__)
        maker_spec = getattr(maker, "__spec__", None)
        return (
            maker_spec is not None
            and bool(maker_spec.has_location)
            and (self.allows_path(maker_spec.origin or ""))
        )

    def allows_path(self, path: str) -> bool:
        resolved = os.path.realpath(path) + (os.sep if path.endswith(os.sep) else "")
        return resolved in self._files or resolved.startswith(self._directories)

    def install(self) -> None:
        """Become the interpreter's only meta path finder, then forget every module
        imported so far that the world does not allow (so a cached one cannot leak)."""
        sys.meta_path[:] = [self]
        importlib.invalidate_caches()
        for name, module in list(sys.modules.items()):
            if name in _KEPT_MODULES or self._allows_loaded(name, module):
                continue
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is module:
                delattr(sys.modules[parent], child)  # `from parent import child` too

    def _allows_loaded(self, name: str, module: ModuleType) -> bool:
        if name.partition(".")[0] in sys.stdlib_module_names:
            return True
        spec = getattr(module, "__spec__", None)
        return spec is not None and self.allows(name, spec)


def _ancestors(path: str) -> list[str]:
    """``path`` and each directory above it (for namespace package lookups)."""
    found = []
    while True:
        found.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            return found
        path = parent


def _import_handler(project_dir: str, handler: str) -> Callable[[Any, Any], Any]:
    # Lambda's task root holds app.py and chalicelib/ with vendor/'s contents beside
    # them; like the chalice CLI, vendor/ goes last so locally built packages win.
    sys.path.insert(0, project_dir)
    vendor = os.path.join(project_dir, "vendor")
    if os.path.isdir(vendor):
        sys.path.append(vendor)
    # Lambda's handler string is "module.attribute": for a Chalice handler that is
    # "app.<python function name>", the decorated object that Lambda itself calls.
    module_name, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_name)
    function: Callable[[Any, Any], Any] = getattr(module, attribute)
    return function


def _call_handler(
    handler: Callable[[Any, Any], Any],
    event: Any,
    request_id: str,
    setup: dict[str, Any],
    context_class: Any,
) -> tuple[str, str]:
    """Invoke once; ("returned", response JSON) or ("error", what Lambda would report)."""
    # Chalice's local context carries the real context's fields; its remaining time
    # counts down from now against the function's timeout. Set what it leaves blank and
    # Lambda fills in; invoked_function_arn stays "" (no account to put in it).
    function_name = setup["function_name"]
    context = context_class(
        function_name, setup["memory_size"], max_runtime_ms=setup["timeout_seconds"] * 1000
    )
    context.aws_request_id = request_id
    context.log_group_name = f"/aws/lambda/{function_name}"
    try:
        response = handler(event, context)
    except Exception as err:
        # Any error fails the invocation; the Python runtime logs it with its traceback.
        error = f"{type(err).__name__}: {err}"
        log.exception("%s", error)
        return ("error", error)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        # Lambda sends the response back as JSON; one that cannot be serialized fails the
        # invocation.
        return ("returned", json.dumps(response))
    except (TypeError, ValueError) as err:
        return ("error", f"Runtime.MarshalError: Unable to marshal response: {err}")


def _exit_when_orphaned(interval: float = 0.5) -> None:
    """Exit if the runner dies without shutting us down (SIGKILL, a crash).

    The pipe tells an idle instance (EOF), but not one busy in a long handler; a
    daemon thread that notices the change of parent covers that case.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main(argv: Sequence[str]) -> int:
    """The instance: init once (guard, import the handler), report "ready" or the init
    error, then answer one invocation per event received until the runner closes the pipe."""
    # Ctrl-C in a terminal reaches the whole process group; shutdown is the runner's call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):  # piped output must show up line by line
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # Lambda's Python runtime logs through a root handler (WARNING and up by default).
    logging.basicConfig(stream=sys.stderr, format="[%(levelname)s]\t%(asctime)s\t%(message)s")
    conn = Connection(int(argv[1]))
    setup: dict[str, Any] = conn.recv()
    _exit_when_orphaned()
    # The runner's tool, not the app's: imported before the guard, kept by reference.
    from chalice.local import LambdaContext

    project_dir = setup["project_dir"]
    world = setup["import_world"]
    PackageImportGuard(
        sys.meta_path,
        world["files"],
        world["directories"],
        fallback_paths=[os.path.join(project_dir, "vendor")],
    ).install()
    try:
        handler = _import_handler(project_dir, setup["handler"])
    except Exception as err:
        # Any init error fails the init, and Lambda logs it to the function's log.
        error = f"{type(err).__name__}: {err}"
        log.exception("Init error: %s", error)
        conn.send(("init_error", error))
        return 0
    conn.send(("ready", None))
    while True:
        try:
            event, request_id = conn.recv()
        except EOFError:
            return 0  # the runner is gone
        conn.send(_call_handler(handler, event, request_id, setup, LambdaContext))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
