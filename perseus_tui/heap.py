"""The applications' garbage-collector policy: perseus_core never touches the collector.

A 10,000-exchange snapshot builds some 70,000 container objects (models,
their dicts and field sets, views) that reference counting alone frees. While
they are built, the cyclic collector runs a hundred times and walks them, and
its full collections walk everything else the process holds too: about a
quarter of such a snapshot's time, spent finding nothing.

`collector_paused()` is for an application that knows a large read is
coming: the collector is off for the read, and what the read built then
goes straight to the oldest generation (`gc.freeze()` then `gc.unfreeze()`,
constant time) instead of being walked on its way there. A process-wide
setting is the application's to choose, so it lives here, beside the
dashboard (whose fleet poll uses it), and `perseus status` uses it too; the
library never changes the collector, and an embedding service keeps its own
policy. `dashboard_collector()` sets the thresholds a dashboard runs with
(`DASHBOARD_THRESHOLDS`). Nothing here imports Textual: the CLI may import it cheaply.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0
"""Scopes open now (they may overlap in one event loop)."""
_resume = False
"""Whether the outermost scope turned the collector off, so must turn it on."""
_program_froze = False
"""Whether the program was once seen with frozen objects: then it manages the
collector itself, and is taken to go on doing so. Asked once, not per scope:
`gc.get_freeze_count()` walks every frozen object (a test suite that freezes
after each test spent 40 s of CPU here)."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause cyclic garbage collection around a burst of allocations.

    Scopes may nest or overlap (several reads awaited at once on one event
    loop): the collector resumes when the last one ends. A collector that was
    off already (the program manages it), or objects frozen by the program
    (`gc.get_freeze_count()`), are left as they are.
    """
    global _depth, _resume, _program_froze
    if _depth == 0:
        _program_froze = _program_froze or gc.get_freeze_count() > 0  # cheap while none
        _resume = gc.isenabled() and not _program_froze
        if _resume:
            gc.disable()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _resume:
            _resume = False
            # What the read built skips the young generations: into the
            # oldest, where only a full collection will look at it.
            gc.freeze()
            gc.unfreeze()
            gc.enable()


DASHBOARD_THRESHOLDS = (2_000, 10, 100)
"""The collector's thresholds while a dashboard runs (CPython's are 700, 10, 10).

Under a feed of thousands of entries a second most new objects die young,
but those the feed and the timelines keep for a while reach the oldest
generation by the hundred thousand, and the defaults then ran a full
collection every second or so, each walking the whole fleet: about 150 ms of
CPU at 10,000 exchanges, during which no key was answered (10 of them in a
10 s burst of 20,000 entries/s). With these, none in that burst, no pause
over 15 ms, and a quarter of the collector's CPU. A full collection waits
for a hundred of the middle generation's instead of ten, so cyclic garbage
that reached the oldest generation is found later; reference counting
still frees everything else at once.
"""


@contextmanager
def dashboard_collector() -> Iterator[None]:
    """`DASHBOARD_THRESHOLDS` for the scope (a dashboard's life), then the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(*DASHBOARD_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
