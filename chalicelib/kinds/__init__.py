"""Job kinds: the project's extension point, and the registry that finds them.

A kind is one module in this package defining ``KIND = Kind(...)``; the registry
(``KINDS``) imports every module here whose name does not start with ``_``, so adding a
kind is adding a file. Everything else about a kind derives from that declaration: the
validation of POST /jobs (chalicelib.requests), the OpenAPI document, GET /kinds, the
dashboard's form and the CLI's arguments (both read GET /kinds).

A declaration names:

- ``name`` and a one-line ``description``;
- ``input``: a frozen dataclass whose fields are ``int``, ``float``, ``str``, ``bool`` or
  ``Literal["a", "b", ...]``, each declared with ``param(...)`` for its limits, default
  and description. A field without a default is required; unknown fields are refused.
  A limit or default may be a function of the stage's Settings (heavyLoad's cap on n);
- ``run(input, ctx)``: the work. ``ctx.state`` is the JSON state it last reported (None
  on a fresh start: resume from it); ``ctx.report(progress, state)`` says how far it got
  (0..1) and what it needs to resume. Reporting is cheap (the worker writes a checkpoint
  at most once per JOBS_PROGRESS_INTERVAL_SECONDS, with the heartbeat). Report often
  (every second or less): only a report renews the run's lease, and a run silent for
  longer than JOBS_STALE_AFTER_SECONDS is ended by the run watchdog as a failed attempt
  (retried, then failed with the reason; chalicelib.watchdog). Reporting is also where a
  run is stopped: it raises when the job is cancelled, its lease is lost, or the
  invocation is about to time out. Those exceptions derive from BaseException, so a
  kind's own ``except Exception`` cannot swallow them;
- ``result``: the return type: ``int``, ``float``, ``str``, ``bool`` or a dataclass of
  those (a JSON object);
- ``estimate_seconds(input, settings)``: its run time, for Retry-After.

A string field's ``pattern`` is an ECMA-262 regular expression, as JSON Schema declares
it, run as the dashboard runs it (``new RegExp(pattern, "u")``, unanchored): the server
matches it with the same engine semantics (``pattern_matches``), not Python's ``re``
(whose ``$`` matches before a trailing newline and whose ``\\d`` matches any script's
digits). A field with a pattern must declare its ``max_length``, so no pattern ever runs
on more than that. ``check_declarations`` says what is wrong with a declaration; the test
suite runs it over every kind (tests/chalicelib/test_kinds.py), and so should every
build: importing a kind never checks it, because on AWS an import error is an init
error of every function, the job lane's worker included.

Limits: a state must serialize to at most MAX_STATE_BYTES of JSON and a result to at most
MAX_RESULT_BYTES; over that (or not JSON at all), the job fails with an error saying so.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import (
    Any,
    Generic,
    Literal,
    NamedTuple,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

from chalicelib.config import Settings

# The largest checkpoint state and result, as compact JSON. A job item also holds its
# input (at most the 16 KiB body), far under DynamoDB's 400 KB item limit.
MAX_STATE_BYTES = 4 * 1024
MAX_RESULT_BYTES = 64 * 1024

# JSON Schema's name for each Python type a field or result may have.
_JSON_TYPES: dict[type, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}

Bound = int | float | Callable[[Settings], Any]
_PARAM = "chalicelib.kinds.param"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# The machinery's records are NamedTuples, not dataclasses: a dataclass compiles its
# methods when it is created, and these are created at every cold start (figure 6).


class Param(NamedTuple):
    """A field's limits, as ``param`` declares them (bounds may depend on the stage)."""

    default: Any = MISSING
    minimum: Bound | None = None
    maximum: Bound | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    description: str = ""


def param(
    *,
    default: Any = MISSING,
    minimum: Bound | None = None,
    maximum: Bound | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    description: str = "",
) -> Any:
    """Declare an input field's limits, default and description (a dataclass field).

    ``default``, ``minimum`` and ``maximum`` may be functions of the stage's Settings.
    ``pattern`` is a JSON Schema (ECMA-262) regular expression, searched in the value
    (``pattern_matches``); a field with one needs a ``max_length`` (``check_declarations``).
    """
    spec = Param(default, minimum, maximum, min_length, max_length, pattern, description)
    if default is MISSING or callable(default):
        return dataclasses.field(metadata={_PARAM: spec})
    return dataclasses.field(default=default, metadata={_PARAM: spec})


class Field(NamedTuple):
    """One input field, resolved for a stage: what validation and the schemas read."""

    name: str
    type: str  # "integer" | "number" | "string" | "boolean"
    required: bool
    default: Any = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    description: str = ""

    def schema(self) -> dict[str, Any]:
        """The field's JSON Schema (only the keywords GET /kinds promises)."""
        schema: dict[str, Any] = {"type": self.type, "title": self.name}
        optional = {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "pattern": self.pattern,
            "enum": list(self.enum) if self.enum is not None else None,
            "description": self.description or None,
        }
        schema.update({key: value for key, value in optional.items() if value is not None})
        if not self.required:
            schema["default"] = self.default
        return schema


class Context(NamedTuple):
    """What a running job may use: the state to resume from, and where to report."""

    # The JSON state the last checkpoint saved; None on a fresh start.
    state: Any
    # report(progress, state): progress in 0..1, state a small JSON value.
    report: Callable[[float, Any], None]


InputT = TypeVar("InputT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True, eq=False)  # compared by identity: one declaration per kind
class Kind(Generic[InputT, ResultT]):
    """A job kind's declaration (see the module docstring)."""

    name: str
    description: str
    input: type[InputT]
    run: Callable[[InputT, Context], ResultT]
    result: type[ResultT]
    estimate_seconds: Callable[[InputT, Settings], float]

    def fields(self, settings: Settings) -> list[Field]:
        """The input's fields, in declaration order, with the stage's limits."""
        hints = get_type_hints(self.input)
        return [_field(f, hints[f.name], settings) for f in dataclasses.fields(self.input)]  # type: ignore[arg-type]

    def input_schema(self, settings: Settings) -> dict[str, Any]:
        fields = self.fields(settings)
        return {
            "type": "object",
            "title": self.name,
            "properties": {f.name: f.schema() for f in fields},
            "required": [f.name for f in fields if f.required],
            "additionalProperties": False,
        }

    def result_schema(self) -> dict[str, Any]:
        return _result_schema(self.result)

    def describe(self, settings: Settings) -> dict[str, Any]:
        """The kind as GET /kinds lists it."""
        return {
            "kind": self.name,
            "description": self.description,
            "input_schema": self.input_schema(settings),
            "result_schema": self.result_schema(),
        }

    def make_input(self, values: Mapping[str, Any]) -> InputT:
        """The typed input from a validated (stored) input; TypeError if it does not fit
        the declaration (say, a field was renamed since the job was submitted)."""
        return self.input(**values)

    def result_json(self, result: Any) -> Any:
        """The JSON form of what ``run`` returned; ValueError if it is not the declared
        type or is over MAX_RESULT_BYTES."""
        if not _is_instance(result, self.result):
            raise ValueError(
                f"kind {self.name} returned {type(result).__name__}, "
                f"declared {self.result.__name__}"
            )
        is_record = dataclasses.is_dataclass(result) and not isinstance(result, type)
        value = dataclasses.asdict(result) if is_record else result
        try:
            size = len(compact_json(value).encode())
        except (TypeError, ValueError) as error:
            raise ValueError(f"the result is not JSON: {error}") from None
        if size > MAX_RESULT_BYTES:
            raise ValueError(f"the result is {size} bytes of JSON; the limit is {MAX_RESULT_BYTES}")
        return value


def compact_json(value: Any) -> str:
    """``value`` as compact JSON (ValueError/TypeError if it is not JSON)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def state_json(state: Any) -> str:
    """The checkpoint form of a reported state; ValueError if it is not JSON or is over
    MAX_STATE_BYTES."""
    try:
        text = compact_json(state)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the reported state is not JSON: {error}") from None
    if len(text.encode()) > MAX_STATE_BYTES:
        raise ValueError(
            f"the reported state is {len(text.encode())} bytes of JSON; "
            f"the limit is {MAX_STATE_BYTES}"
        )
    return text


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``value``, as ECMA-262 with the ``u`` flag
    runs it (JSON Schema's ``pattern``, and the dashboard's ``new RegExp(pattern, "u")``).

    Raises ValueError for a value that is not valid Unicode (a lone surrogate, which JSON
    can escape but no UTF-8 text holds), and regress.RegressError for a pattern that is
    not ECMA-262 (``check_declarations`` refuses those; the test suite runs it).
    """
    return _ecma_regex(pattern).find(value) is not None


@lru_cache(maxsize=256)  # a kind's pattern is compiled once per process
def _ecma_regex(pattern: str) -> Any:
    # regress (ECMA-262 regular expressions, in Rust): imported on the first pattern
    # checked, so a cold start that checks none pays nothing for it.
    import regress

    return regress.Regex(pattern, "u")


def declaration_problems(kind: Kind[Any, Any]) -> list[str]:
    """What is wrong with a kind's input declaration, one line each (none: it is sound).

    A field's type outside the supported ones, a pattern on a field that is not a
    string, a pattern without ``max_length`` (it would run on anything up to the 16 KiB
    body), and a pattern that is not an ECMA-262 regular expression. Needs no stage
    settings: it reads the declaration itself.
    """
    import regress  # see _ecma_regex

    hints = get_type_hints(kind.input)
    problems = []
    for field in dataclasses.fields(kind.input):
        where = f"kind {kind.name}, input field {field.name}"
        hint = hints[field.name]
        is_string = hint is str or get_origin(hint) is Literal
        if not is_string and hint not in _JSON_TYPES:
            problems.append(f"{where}: {hint!r} is not int, float, str, bool or Literal")
        spec: Param = field.metadata.get(_PARAM, Param())
        if spec.pattern is None:
            continue
        if not is_string:
            problems.append(f"{where}: a pattern applies to str fields only")
        if spec.max_length is None:
            problems.append(f"{where}: a pattern needs a max_length")
        try:
            _ecma_regex(spec.pattern)
        except (regress.RegressError, ValueError) as error:  # ValueError: not UTF-8
            problems.append(f"{where}: pattern {spec.pattern!r} is not ECMA-262: {error}")
    return problems


class DeclarationError(TypeError):
    """A kind's declaration that the service cannot honour (``check_declarations``)."""


def check_declarations(kinds: Iterable[Kind[Any, Any]]) -> None:
    """Raise DeclarationError naming every problem of every kind (declaration_problems);
    for the test suite and the build, never at import (see the module docstring)."""
    problems = [problem for kind in kinds for problem in declaration_problems(kind)]
    if problems:
        raise DeclarationError("; ".join(problems))


def _field(field: dataclasses.Field[Any], hint: Any, settings: Settings) -> Field:
    spec: Param = field.metadata.get(_PARAM, Param())
    enum: tuple[str, ...] | None = None
    if get_origin(hint) is Literal:
        enum = tuple(str(value) for value in get_args(hint))
        type_name = "string"
    elif hint in _JSON_TYPES:
        type_name = _JSON_TYPES[hint]
    else:
        raise TypeError(
            f"input field {field.name}: {hint!r} is not int, float, str, bool or Literal"
        )
    default = spec.default
    if default is MISSING and field.default is not dataclasses.MISSING:
        default = field.default
    return Field(
        name=field.name,
        type=type_name,
        required=default is MISSING,
        default=None if default is MISSING else _resolve(default, settings),
        minimum=_resolve(spec.minimum, settings),
        maximum=_resolve(spec.maximum, settings),
        min_length=spec.min_length,
        max_length=spec.max_length,
        pattern=spec.pattern,
        enum=enum,
        description=spec.description,
    )


def _resolve(value: Any, settings: Settings) -> Any:
    return value(settings) if callable(value) else value


def _result_schema(result: type[Any]) -> dict[str, Any]:
    if result in _JSON_TYPES:
        return {"type": _JSON_TYPES[result]}
    if not dataclasses.is_dataclass(result):
        raise TypeError(f"result type {result!r} is not int, float, str, bool or a dataclass")
    hints = get_type_hints(result)
    fields = dataclasses.fields(result)
    return {
        "type": "object",
        "title": result.__name__,
        "properties": {f.name: _result_schema(hints[f.name]) for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def _is_instance(value: Any, declared: type[Any]) -> bool:
    # bool is an int subclass in Python, but not a number in JSON.
    if declared is not bool and isinstance(value, bool):
        return False
    if declared is float:
        return isinstance(value, int | float)
    return isinstance(value, declared)


def _discover() -> dict[str, Kind[Any, Any]]:
    """Every kind this package declares: each module's KIND, by name."""
    found: dict[str, Kind[Any, Any]] = {}
    directory = os.path.dirname(__file__)
    for entry in sorted(os.listdir(directory)):
        module_name, ext = os.path.splitext(entry)
        if ext != ".py" or module_name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_name}")
        kind = getattr(module, "KIND", None)
        if not isinstance(kind, Kind):
            raise TypeError(f"{module.__name__} declares no KIND = Kind(...)")
        if kind.name in found:
            raise TypeError(f"two modules declare the kind {kind.name!r}")
        found[kind.name] = kind
    return found


# The registry: every kind, by name. Built once, when this package is first imported.
KINDS: dict[str, Kind[Any, Any]] = _discover()
