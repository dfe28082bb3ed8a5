"""The applications' collector policy (`perseus_tui.heap`)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest

from perseus_tui import heap
from perseus_tui.app import PerseusApp
from perseus_tui.heap import collector_paused


@pytest.fixture(autouse=True)
def _collector_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The suite freezes what collection built (tests/conftest.py); these tests
    # need the collector as a program starts with it: nothing frozen, and never
    # seen frozen.
    monkeypatch.setattr(heap, "_program_froze", False)
    was_enabled = gc.isenabled()
    was_frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    yield
    gc.unfreeze()
    if was_frozen:
        gc.collect()
        gc.freeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_paused_inside_and_survivors_go_to_the_oldest_generation() -> None:
    gc.enable()
    gc.collect()
    with collector_paused():
        assert not gc.isenabled()
        built = [{"n": n} for n in range(10_000)]
        assert gc.get_count()[0] >= 10_000  # nothing collected the young generation
    assert gc.isenabled()
    assert gc.get_count()[0] < 10_000  # the young generation was emptied...
    assert gc.get_freeze_count() == 0  # ...into the oldest, not the permanent one
    assert built[-1] == {"n": 9_999}


def test_overlapping_scopes_resume_once_the_last_ends() -> None:
    gc.enable()
    outer = collector_paused()
    inner = collector_paused()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # scopes of two tasks need not nest
    assert not gc.isenabled()
    inner.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_program_that_manages_the_collector_is_left_alone() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()
    gc.enable()
    kept = [object() for _ in range(10)]
    gc.freeze()
    frozen = gc.get_freeze_count()
    with collector_paused():
        assert gc.isenabled()  # its frozen objects are its own: not unfrozen here
    assert gc.get_freeze_count() == frozen and kept
    gc.unfreeze()
    with collector_paused():  # once seen freezing, taken to go on managing it
        assert gc.isenabled()


def test_the_collector_resumes_when_the_read_fails() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the read failed")
    assert gc.isenabled()


async def test_a_dashboard_runs_with_its_own_thresholds_and_gives_the_old_ones_back(
    make_app: Callable[..., PerseusApp],
) -> None:
    """A full collection walks the whole fleet: while the dashboard runs they
    come a tenth as often (`DASHBOARD_THRESHOLDS`); after it, the program's own."""
    before = gc.get_threshold()
    assert before != heap.DASHBOARD_THRESHOLDS
    app = make_app()
    async with app.run_test(size=(80, 24)):
        assert gc.get_threshold() == heap.DASHBOARD_THRESHOLDS
    assert gc.get_threshold() == before
