"""Writing a host file: slots as `perseus agent --config FILE` reads them.

The inverse of `perseus_core.runtime.host_config`, for a program that plans
its agents in code (the demo) and runs them the way an operator would, from
a file the operator can open and copy. Each `[[slot]]` lists the keys that
differ from the agent's defaults, in `AgentOptions` order, so the file reads
like one written by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from enum import Enum

from perseus_core.runtime.host_config import SLOT
from perseus_core.runtime.options import AgentOptions

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def toml_string(text: str) -> str:
    """`text` as a TOML basic string: quotes, backslashes and control characters
    escaped (TOML allows none of them raw), everything else as it is."""
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    """One value of a slot (a string, a number, a flag, a choice or a command).

    Raises:
        TypeError: a value no `AgentOptions` field takes.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return toml_string(str(value.value))
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.splitlines()]


def host_file_text(
    slots: Sequence[AgentOptions], header: str = "", notes: Mapping[int, str] | None = None
) -> str:
    """The host file that runs `slots`, each key that differs from its default.

    Args:
        slots: one per exchange slot, in the order the file lists them.
        header: comment lines for the top of the file (without `#`).
        notes: comment lines above a slot's table, by exchange id.
    """
    lines = _comment(header)
    for options in slots:
        if lines:
            lines.append("")
        lines += _comment((notes or {}).get(options.exchange_id, ""))
        lines.append(f"[[{SLOT}]]")
        for field in dataclasses.fields(AgentOptions):
            value = getattr(options, field.name)
            if value is None:
                continue
            if field.default is not dataclasses.MISSING and value == field.default:
                continue
            if field.name == "command" and not value:
                continue
            lines.append(f"{field.name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
