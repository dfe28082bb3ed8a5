"""The process tree of the demo, read from /proc: what an agent left behind
(a child that ignored SIGTERM while its agent was killed) can still be found
and stopped after the agent itself is gone."""

from __future__ import annotations

import contextlib
import os


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process, from /proc.

    Empty where there is no /proc: cleanup then relies on process groups alone.
    """
    table: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = raw[raw.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            table[int(name)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid` (children, grandchildren...) -> its process group."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _group) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, int] = {}
    pending = list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        if child in found:
            continue
        found[child] = table[child][1]
        pending.extend(children.get(child, ()))
    return found
