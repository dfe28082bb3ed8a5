"""Episodes: an exchange's entries that come together told as one message (no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime

from perseus_core.notify.episodes import Episodes, fold
from perseus_core.notify.events import EventKind, FleetEvent

NOW = datetime(2026, 2, 10, 22, 45, tzinfo=UTC)


def moved(a: str, b: str, name: str = "binance", exchange_id: int = 2) -> FleetEvent:
    return FleetEvent(
        EventKind.TRANSITION, name, exchange_id, f"{a} → {b}", "vm", NOW, states=(a, b)
    )


def failed(message: str, name: str = "binance", exchange_id: int = 2) -> FleetEvent:
    return FleetEvent(
        EventKind.ERROR, name, exchange_id, "error while active", "vm", NOW, detail=message
    )


def steps(*states: str, name: str = "binance") -> list[FleetEvent]:
    return [moved(a, b, name) for a, b in zip(states, states[1:], strict=False)]


def test_a_crash_and_its_restart_are_one_error() -> None:
    episodes = Episodes(settle_s=10, longest_s=60)
    told: list[FleetEvent] = []
    for at, event in enumerate(
        [failed("exited with code 75"), *steps("active", "stopping", "stopped", "idle")]
    ):
        told += episodes.add(event, float(at))
    assert told == [] and episodes.next_due() == 13.0  # idle after a crash: a restart may come
    for event in steps("idle", "starting", "warming", "active"):
        told += episodes.add(event, 8.0)  # within the settle time
    (crash,) = told
    assert crash.kind is EventKind.ERROR and crash.detail == "exited with code 75"
    assert crash.states == (
        "active", "stopping", "stopped", "idle", "starting", "warming", "active"
    )  # fmt: skip
    assert crash.count == 7 and len(episodes) == 0


def restarting(name: str = "binance") -> FleetEvent:
    return FleetEvent(
        EventKind.RESTART, name, 2, "automatic restart", "vm", NOW, detail="restarting in 1.4s"
    )


def test_an_automatic_restart_is_told_within_the_crash_it_follows() -> None:
    episodes = Episodes(settle_s=10, longest_s=60)
    told: list[FleetEvent] = []
    for event in [failed("exited with code 2"), *steps("active", "stopping", "stopped", "idle"),
                  restarting(), *steps("idle", "starting", "warming", "active")]:  # fmt: skip
        told += episodes.add(event, 1.0)
    (crash,) = told
    assert crash.kind is EventKind.ERROR and crash.count == 8
    assert crash.transition == "error while active and restarted automatically"
    # A clean exit restarted (--restart always): idle ended the stop's episode
    # before the restart came; the restart and the start it led to are one.
    assert episodes.add(restarting(), 2.0) == []
    assert episodes.add(moved("idle", "starting"), 2.0) == []  # after a restart idle is no rest
    (start,) = episodes.add(moved("starting", "active"), 2.0)
    assert start.kind is EventKind.TRANSITION
    assert start.transition == "idle → starting → active and restarted automatically"
    # Restarts alone (their transitions filtered out): the latest, counted.
    alone = fold([restarting(), restarting()])
    assert alone.kind is EventKind.RESTART and alone.count == 2
    assert alone.transition == "2 automatic restarts"


def test_a_clean_stop_and_a_start_are_told_when_at_rest() -> None:
    episodes = Episodes(settle_s=10, longest_s=60)
    assert episodes.add(moved("active", "stopping"), 0.0) == []
    assert episodes.add(moved("stopping", "stopped"), 0.0) == []
    (stop,) = episodes.add(moved("stopped", "idle"), 0.0)
    assert stop.kind is EventKind.TRANSITION
    assert stop.transition == "active → stopping → stopped → idle"
    assert episodes.add(moved("idle", "starting"), 1.0) == []
    (start,) = episodes.add(moved("starting", "active"), 1.0)
    assert start.transition == "idle → starting → active"


def test_a_quiet_or_long_episode_is_told_when_due() -> None:
    episodes = Episodes(settle_s=10, longest_s=25)
    episodes.add(moved("idle", "starting"), 0.0)
    episodes.add(moved("starting", "warming"), 2.0)  # a long warm-up: nothing more for a while
    assert episodes.due(11.9) == [] and episodes.next_due() == 12.0
    (warming,) = episodes.due(12.0)
    assert warming.transition == "idle → starting → warming"
    crashing = Episodes(settle_s=10, longest_s=25)
    for at in range(0, 30, 5):  # a crash loop: never quiet for 10 s
        crashing.add(failed(f"crash {at}"), float(at))
    (loop,) = crashing.due(25.0)
    assert loop.transition == "error while active (and 5 more)" and loop.detail == "crash 0"


def test_other_kinds_are_told_at_once_after_the_open_episode() -> None:
    episodes = Episodes(settle_s=10, longest_s=60)
    episodes.add(moved("idle", "starting"), 0.0)
    episodes.add(moved("idle", "starting", name="kraken", exchange_id=4), 0.0)
    offline = FleetEvent(EventKind.OFFLINE, "binance", 2, "starting → offline", "vm", NOW)
    told = episodes.add(offline, 1.0)
    assert [event.kind for event in told] == [EventKind.TRANSITION, EventKind.OFFLINE]
    assert told[0].transition == "idle → starting" and len(episodes) == 1  # kraken's goes on
    assert [event.exchange_name for event in episodes.close_all()] == ["kraken"]


def test_no_settle_time_tells_each_event_at_once() -> None:
    episodes = Episodes(settle_s=0, longest_s=0)
    event = moved("idle", "starting")
    assert episodes.add(event, 0.0) == [event] and len(episodes) == 0


def test_transitions_that_do_not_meet_show_the_gap() -> None:
    told = fold([moved("idle", "starting"), moved("warming", "active")])
    assert told.transition == "idle → starting → … → warming → active"
