"""The host file of `perseus agent --config`: every exchange slot one process runs.

```toml
[defaults]            # optional: any slot key, for every slot that does not set it
warmup_s = 5

[[slot]]              # one per exchange slot
exchange_id = 1
exchange_name = "coinbase"
command = "./run-feed --exchange coinbase"   # a string (split as a shell would) or a list
```

A slot's keys are exactly the fields of `AgentOptions`, and their types are
that dataclass's: both are read from it here, so a field added there is a
key here, checked as its annotation says, with nothing else to change.
`[[slot]]` (an array of tables) rather than `[slots.NAME]`: a slot is then
written with the very keys the dataclass has, its name included, and the
file keeps the operator's order.

Nothing of Redis is in the file: the connection (and its password) and the
fleet-wide timings come from the environment, as for every other verb, so
the agent and `perseus status` on that host judge heartbeats alike.

The whole file is checked before anything starts: every problem at once,
one line each, with the line of the key or table at fault.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import shlex
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from perseus_core.runtime.options import AgentOptions, child_command_problem
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import MAX_EXCHANGE_ID, validate_exchange_name
from perseus_core.wire.text import clean

DEFAULTS = "defaults"
"""The table of values every slot takes unless it sets its own."""
SLOT = "slot"
"""The array of tables, one per exchange slot."""
MAX_FILE_BYTES = 1024 * 1024
"""A host file is a few hundred bytes per slot; anything this large is not one."""

_COMMAND = "command"
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]#]*?)\s*\]\]?\s*(?:#.*)?$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a host file.

    Attributes:
        line: 1-based line it is on, or None when it is about the file as a whole.
        message: what is wrong, one line.
    """

    line: int | None
    message: str

    def describe(self, source: str) -> str:
        """`host.toml:12: message`, the form compilers use, so editors can jump to it."""
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.message}"


class HostConfigInvalid(PerseusError):
    """A host file that cannot be run as it is.

    Attributes:
        source: the file as named to the operator.
        problems: everything wrong with it, in file order.
    """

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: p.line or 0)
        super().__init__(self.one_line())

    def lines(self) -> list[str]:
        """One line per problem."""
        return [problem.describe(self.source) for problem in self.problems]

    def one_line(self) -> str:
        """Every problem in a single line (for a log, where one event is one line)."""
        return "; ".join(self.lines())


def load_host_config(path: str | Path) -> tuple[AgentOptions, ...]:
    """The slots a host file lists, in file order.

    Raises:
        HostConfigInvalid: the file cannot be read, is not TOML, or does not
            describe a set of slots that could all run.
    """
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise HostConfigInvalid(
            source, [Problem(None, f"cannot read: {exc.strerror or exc}")]
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise HostConfigInvalid(source, [Problem(None, "larger than 1 MiB: not a host file")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HostConfigInvalid(source, [Problem(None, f"not UTF-8 text: {exc.reason}")]) from None
    return parse_host_config(text, source)


def parse_host_config(text: str, source: str = "<config>") -> tuple[AgentOptions, ...]:
    """`load_host_config` for a file's text.

    Raises:
        HostConfigInvalid: see `load_host_config`.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HostConfigInvalid(source, [_syntax_problem(exc, text)]) from None
    checker = _Checker(_Lines(text))
    slots = checker.check(document)
    if checker.problems:
        raise HostConfigInvalid(source, checker.problems)
    return slots


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str) -> Problem:
    message = str(exc)
    line = getattr(exc, "lineno", None)  # Python 3.14 gives it; before, only the message does
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    if found is not None:
        line = line or int(found.group(1))
        message = f"{message[: found.start()]} (column {found.group(2)})"
    elif "(at end of document)" in message:
        message = message.replace(" (at end of document)", " at the end of the file")
        line = max(1, len(text.splitlines()))
    return Problem(line, f"invalid TOML: {clean(message, 200)}")


# --- what AgentOptions accepts -------------------------------------------------------


@functools.cache
def _fields() -> dict[str, tuple[TypeAdapter[Any], bool]]:
    """Each `AgentOptions` field: a validator for its annotated type, and whether it
    must be given (no default)."""
    hints = typing.get_type_hints(AgentOptions)
    return {
        field.name: (
            TypeAdapter(hints[field.name]),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(AgentOptions)
    }


@functools.cache
def _named_choices() -> frozenset[str]:
    """Fields whose type is an enumeration (`restart`): a file names the
    choice as a string, which strict validation would refuse."""
    hints = typing.get_type_hints(AgentOptions)
    return frozenset(
        name for name, hint in hints.items() if isinstance(hint, type) and issubclass(hint, Enum)
    )


def _nearest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _where(index: int, name: Any) -> str:
    """How a problem names its slot: `slot 2 (kraken)`, by position and, once known, name."""
    return f"slot {index + 1}" + (f" ({clean(name, 64)})" if isinstance(name, str) else "")


def _shown(value: Any) -> str:
    return clean(repr(value), 60)


# --- where things are in the text ----------------------------------------------------


class _Lines:
    """Line numbers of tables and keys, found by scanning the text: tomllib gives
    them only for syntax errors. A key written in a form the scan does not
    know (dotted, inline table) is placed at its table's header."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._headers: list[tuple[int, str, bool]] = []  # (line, name, array)
        for number, line in enumerate(self._lines, 1):
            match = _HEADER.match(line)
            if match is not None:
                self._headers.append((number, _unquote(match.group(2)), match.group(1) == "[["))

    def table(self, name: str, index: int | None = None) -> int | None:
        """Line of `[name]`, or of the `index`th `[[name]]` (0-based)."""
        seen = 0
        for number, header, array in self._headers:
            if header != name:
                continue
            if index is None and not array:
                return number
            if index is not None and array:
                if seen == index:
                    return number
                seen += 1
        return None

    def key(self, table_line: int | None, key: str) -> int | None:
        """Line of `key = ...` in the table whose header is on `table_line`
        (None: the top of the file); the header's line if not found."""
        start = table_line or 0
        end = next((n for n, _, _ in self._headers if n > start), len(self._lines) + 1)
        pattern = re.compile(
            rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*="""
        )
        for number in range(start + 1, end):
            if pattern.match(self._lines[number - 1]):
                return number
        return table_line


def _unquote(name: str) -> str:
    return name.strip().strip("\"'")


# --- the checks ------------------------------------------------------------------------


class _Checker:
    """Collects every problem of one document (rather than stopping at the first)."""

    def __init__(self, lines: _Lines) -> None:
        self._lines = lines
        self.problems: list[Problem] = []

    def _add(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(line, message))

    def check(self, document: Mapping[str, Any]) -> tuple[AgentOptions, ...]:
        for key, value in document.items():
            if key not in (DEFAULTS, SLOT):
                kind = "table" if isinstance(value, dict) else "key"
                self._add(
                    self._lines.table(key) or self._lines.key(None, key),
                    f"unknown {kind} {clean(key, 60)}{_nearest(key, (DEFAULTS, SLOT))}: "
                    f"a host file has [{DEFAULTS}] and [[{SLOT}]] tables (Redis settings"
                    " come from the environment)",
                )
        defaults = self._defaults(document.get(DEFAULTS, {}))
        raw_slots = document.get(SLOT, [])
        if not isinstance(raw_slots, list) or not all(isinstance(s, dict) for s in raw_slots):
            self._add(self._lines.key(None, SLOT), f"{SLOT} must be written as [[{SLOT}]] tables")
            return ()
        if not raw_slots:
            self._add(None, f"no [[{SLOT}]] table: nothing to run")
        slots = [self._slot(index, raw, defaults) for index, raw in enumerate(raw_slots)]
        self._duplicates([values for _, values in slots])
        return tuple(options for options, _ in slots if options is not None)

    def _defaults(self, raw: Any) -> dict[str, Any]:
        line = self._lines.table(DEFAULTS)
        if not isinstance(raw, dict):
            self._add(self._lines.key(None, DEFAULTS), f"{DEFAULTS} must be a [{DEFAULTS}] table")
            return {}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            at = self._lines.key(line, key)
            if key in _fields() and _fields()[key][1]:
                self._add(at, f"[{DEFAULTS}]: {key} names one slot: set it in each [[{SLOT}]]")
                continue
            checked = self._value(at, f"[{DEFAULTS}]", key, value)
            if checked is not _INVALID:
                values[key] = checked
        return values

    def _slot(
        self, index: int, raw: dict[str, Any], defaults: dict[str, Any]
    ) -> tuple[AgentOptions | None, dict[str, Any]]:
        """The slot's options (None if anything is wrong) and the values that passed."""
        line = self._lines.table(SLOT, index)
        where = _where(index, raw.get("exchange_name"))
        values = dict(defaults)
        valid = True
        for key, value in raw.items():
            checked = self._value(self._lines.key(line, key), where, key, value)
            if checked is _INVALID:
                valid = False
            else:
                values[key] = checked
        for key, (_, required) in _fields().items():
            if required and key not in raw:
                self._add(line, f"{where}: {key} is missing")
                valid = False
        return (AgentOptions(**values) if valid else None), values

    def _value(self, line: int | None, where: str, key: str, value: Any) -> Any:
        """`value` as the field `key` takes it, or `_INVALID` (the problem recorded)."""
        fields = _fields()
        if key not in fields:
            self._add(line, f"{where}: unknown key {clean(key, 60)}{_nearest(key, fields)}")
            return _INVALID
        if key == _COMMAND and isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as exc:
                self._add(line, f"{where}: {key} = {_shown(value)}: {str(exc).lower()}")
                return _INVALID
        adapter, _ = fields[key]
        try:
            checked = adapter.validate_python(value, strict=key not in _named_choices())
        except ValidationError as exc:
            error = exc.errors()[0]
            at = "".join(f"[{part}]" for part in error["loc"])
            message = error["msg"][:1].lower() + error["msg"][1:]
            self._add(line, f"{where}: {key}{at} = {_shown(value)}: {message}")
            return _INVALID
        problem = _value_problem(key, checked)
        if problem is not None:
            self._add(line, f"{where}: {key} = {_shown(value)}: {problem}")
            return _INVALID
        if key == _COMMAND:
            checked = tuple(checked)
            problem = child_command_problem(checked)
            if problem is not None:
                self._add(line, f"{where}: {problem}")
                return _INVALID
        return checked

    def _duplicates(self, slots: list[dict[str, Any]]) -> None:
        """An exchange id or name (any case, as the catalog compares them) twice
        would be two agents fighting over one slot, or two slots one name."""
        for key, same in (("exchange_id", lambda v: v), ("exchange_name", str.casefold)):
            first: dict[Any, int] = {}
            for index, values in enumerate(slots):
                if key not in values:
                    continue
                seen = first.setdefault(same(values[key]), index)
                if seen != index:
                    self._add(
                        self._lines.key(self._lines.table(SLOT, index), key),
                        f"{_where(index, values.get('exchange_name'))}:"
                        f" {key} {values[key]} is slot {seen + 1}'s too",
                    )


_INVALID = object()
"""A value that failed its check (None is a value some fields take)."""


def _value_problem(key: str, value: Any) -> str | None:
    """What the field's type allows but a slot cannot take: the same limits the
    command line puts on its options. Every number an agent takes is a count,
    a duration or an id: none may be negative or infinite."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, int | float) and value < 0:
        return "must not be negative"
    if key == "exchange_id" and value > MAX_EXCHANGE_ID:
        return f"must be at most {MAX_EXCHANGE_ID}"
    if key == "exchange_name":
        try:
            validate_exchange_name(value)
        except ValueError as exc:
            return str(exc).removeprefix(f"invalid exchange name {value[:80]!r}: ")
    return None
