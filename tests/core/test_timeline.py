"""State timelines (perseus_core.present.timeline): built from known entries, cell by cell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from perseus_core.present.timeline import (
    DAY,
    HOUR,
    KEPT_AT_LEAST,
    KEPT_IN_FLEET,
    KEPT_PER_EXCHANGE,
    History,
    Presence,
    SliceKind,
    TimelineBook,
    build,
)
from perseus_core.wire import keys
from perseus_core.wire.models import CommandEntry, ErrorEntry, StateTransitionEntry
from perseus_core.wire.timeutil import format_ts, to_epoch_ms

NOW = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)
SHARED = keys.activity_key("kraken")
OURS = keys.perseus_activity_key("kraken")


def _id(at: datetime) -> str:
    return f"{to_epoch_ms(at)}-0"


def move(src: str, dst: str, hours_ago: float) -> StateTransitionEntry:
    at = NOW - timedelta(hours=hours_ago)
    return StateTransitionEntry(
        id=_id(at), key=SHARED, stream="kraken", timestamp=format_ts(at),
        from_state=src, to_state=dst,
    )  # fmt: skip


def error(hours_ago: float, state: str = "active") -> ErrorEntry:
    at = NOW - timedelta(hours=hours_ago)
    return ErrorEntry(
        id=_id(at), key=SHARED, stream="kraken", timestamp=format_ts(at), error="boom", state=state
    )


def command(hours_ago: float) -> CommandEntry:
    at = NOW - timedelta(hours=hours_ago)
    return CommandEntry(
        id=_id(at), key=OURS, stream="kraken", timestamp=format_ts(at), command="stop",
        status="success",
    )  # fmt: skip


def cells(timeline_slices: object) -> str:
    """A strip as letters: A active, W warming, S starting, P stopping, I idle
    (online), . offline, ? unknown."""
    letters = {"active": "A", "warming": "W", "starting": "S", "stopping": "P", "idle": "I"}
    out = []
    for piece in timeline_slices:  # type: ignore[attr-defined]
        if piece.kind is SliceKind.STATE:
            out.append(letters.get(piece.state, "x"))
        else:
            out.append("." if piece.kind is SliceKind.OFFLINE else "?")
    return "".join(out)


def test_transitions_offline_gap_and_a_state_held_across_the_left_edge() -> None:
    """Active since before the window (known from the entry before it), a stop
    that leaves a gap, a start back to active; errors and commands are marks."""
    entries = [
        move("warming", "active", 30),  # before the 24 h window: active across its edge
        error(20.5),
        command(14.5),
        move("active", "stopping", 14.2),
        move("stopping", "stopped", 14.1),  # the key goes: offline
        move("stopped", "idle", 14.05),
        move("idle", "starting", 8),  # a holder again
        move("starting", "warming", 7.5),
        move("warming", "active", 6),
    ]
    presence = Presence(True, "active", NOW - timedelta(hours=6))
    timeline = build(entries, presence, end=NOW, span=DAY, cells=24)
    # 8 h to 7 h ago: 30 min starting, 30 min warming, a tie the later state wins
    assert cells(timeline.slices) == "AAAAAAAAAA" + "......" + "WW" + "AAAAAA"
    assert timeline.slices[0].start == NOW - DAY
    assert timeline.slices[3].errors == 1  # 20.5 h ago: the slice from 21 h to 20 h ago
    assert timeline.slices[9].commands == 1
    assert timeline.slices[9].transitions == 3  # stopping, stopped, idle
    assert timeline.slices[9].kind is SliceKind.STATE  # mostly active before the stop
    assert timeline.slices[16].state == "warming"
    assert [e.to_state for e in timeline.slices[16].entries] == ["starting", "warming"]  # type: ignore[union-attr]
    assert timeline.transitions == 6  # the one before the window is not counted
    assert timeline.index_at(NOW - timedelta(minutes=30)) == 23


def test_first_transitions_from_state_holds_before_it() -> None:
    """No entry before the window: the first transition's fromState held until it."""
    timeline = build(
        [move("warming", "active", 2)],
        Presence(True, "active", NOW - timedelta(hours=2)),
        end=NOW,
        span=timedelta(hours=4),
        cells=4,
    )
    assert cells(timeline.slices) == "WWAA"


def test_a_killed_instance_is_offline_from_its_last_heartbeat_seen() -> None:
    """No entry says it: the key vanished while active, last heartbeat seen 2 h ago."""
    entries = [move("warming", "active", 5)]
    seen = Presence(False, last_beat=NOW - timedelta(hours=2))
    assert cells(build(entries, seen, end=NOW, span=timedelta(hours=6), cells=6).slices) == (
        "WAAA.."
    )
    unseen = Presence(False)  # nobody saw a heartbeat: since the last entry is unknown
    assert cells(build(entries, unseen, end=NOW, span=timedelta(hours=6), cells=6).slices) == (
        "W?????"
    )


def test_a_status_key_says_what_the_stream_cannot() -> None:
    """A holder claimed the slot idle after a stop (no entry for a claim): online idle;
    an instance the stream never mentions is in its key's state since its lastStateChange."""
    entries = [move("stopped", "idle", 3)]
    claimed = Presence(True, "idle", NOW - timedelta(hours=1))
    # before the transition it was `stopped`, which ends a run: offline too
    assert cells(build(entries, claimed, end=NOW, span=timedelta(hours=4), cells=4).slices) == (
        "...I"
    )
    quiet = Presence(True, "active", NOW - timedelta(hours=2))
    assert cells(build([], quiet, end=NOW, span=timedelta(hours=4), cells=4).slices) == "??AA"


def test_unknown_before_a_read_cut_short_and_no_stream_at_all() -> None:
    entries = [move("active", "stopping", 1.5), move("stopping", "stopped", 1.4)]
    cut = build(
        entries, Presence(False), end=NOW, span=timedelta(hours=4), cells=4,
        known_from=NOW - timedelta(hours=2.5),
    )  # fmt: skip
    # unknown before the read's oldest entry (2.5 h ago), active from it (the
    # 3 h to 2 h slice: a tie, the later wins), then stopped
    assert cells(cut.slices) == "?AA."
    assert cells(build([], Presence(False), end=NOW, span=HOUR, cells=3).slices) == "???"


def test_the_dominant_state_wins_a_slice_and_a_tie_goes_to_the_later() -> None:
    entries = [move("starting", "warming", 1.75), move("warming", "active", 1.5)]
    timeline = build(
        entries, Presence(True, "active", NOW), end=NOW, span=timedelta(hours=2), cells=2
    )
    # first hour: 15 min starting, 15 warming, 30 active; the tie rule never needed
    assert cells(timeline.slices) == "AA"
    tie = build(
        [move("starting", "warming", 0.5)],
        Presence(True, "warming", NOW),
        end=NOW,
        span=HOUR,
        cells=1,
    )
    assert cells(tie.slices) == "W"


def test_history_merges_the_read_with_the_tail_once_and_stays_bounded() -> None:
    history = History()
    live = move("warming", "active", 0.1)
    history.add(live)  # the tail was faster than the read
    edge = move("starting", "warming", 0.2)
    history.load([live, edge, move("idle", "starting", 0.5)], known_from=None)
    assert len(history.entries) == 3 and history.entries[-1] is live
    assert history.transitions_since(NOW - HOUR) == 3
    history.trim(NOW - timedelta(minutes=9))  # keeps the newest transition before the cut
    assert [e.id for e in history.entries] == [edge.id, live.id]
    for n in range(KEPT_PER_EXCHANGE + 10):
        history.add(error(n / 3600))  # one a second, older and older
    assert len(history.entries) == KEPT_PER_EXCHANGE
    assert history.known_from is not None


def test_history_rebuilds_a_timeline_only_when_what_it_shows_changed() -> None:
    """The last timeline per window shape is reused while nothing it is built
    from changed, and built again on a new entry, a trim, another status or
    another window end; entries added out of order land in time order."""
    history = History()
    history.load([move("warming", "active", 2.0)], known_from=None)
    online = Presence(True, "active", NOW - timedelta(hours=2))
    first = history.timeline(online, end=NOW, span=HOUR, cells=4)
    assert history.timeline(online, end=NOW, span=HOUR, cells=4) is first
    assert cells(first.slices) == "AAAA"
    stop = move("active", "stopped", 0.3)
    history.add(stop)
    history.add(error(0.6))  # older than the stop: placed before it
    assert [e.id for e in history.entries][-2:] == [error(0.6).id, stop.id]
    gone = Presence(False, last_beat=NOW - timedelta(hours=0.3))
    after = history.timeline(gone, end=NOW, span=HOUR, cells=4)
    assert cells(after.slices) == "AAA." and after.slices[1].errors == 1
    assert history.timeline(gone, end=NOW, span=HOUR, cells=4) is after
    assert history.timeline(gone, end=NOW, span=HOUR, cells=2) is not after  # another shape
    later = history.timeline(gone, end=NOW + HOUR, span=HOUR, cells=4)
    assert cells(later.slices) == "...."
    history.trim(NOW - timedelta(minutes=10))  # drops all but the stop (the newest transition)
    assert [e.id for e in history.entries] == [stop.id]
    assert history.timeline(gone, end=NOW, span=HOUR, cells=4) is not after


def test_book_counts_flapping_exchanges() -> None:
    book = TimelineBook()
    flaps = []
    for n in range(8):
        dst, src = ("active", "warming") if n % 2 else ("warming", "active")
        flaps.append(move(src, dst, 0.9 - n * 0.1))
    book.add(flaps)
    book.add([move("warming", "active", 0.5).model_copy(update={"stream": "calm"})])
    assert book.flapping(["kraken", "calm", "absent"], NOW, threshold=6) == 1
    assert book.flapping(["kraken"], NOW, threshold=8) == 0
    assert book.flapping({"calm", "absent"}, NOW, threshold=6) == 0  # kraken is not asked about
    assert cells(book.timeline("absent", Presence(False), end=NOW, span=HOUR, cells=2).slices) == (
        "??"
    )


def test_the_flapping_count_follows_entries_added_loaded_and_trimmed_after_it_was_asked() -> None:
    """The histories long enough to flap are kept apart once asked about: entries
    added, a window loaded and a trim afterwards count as if every history
    were looked at again."""
    book = TimelineBook()
    calm = [move("warming", "active", 0.5).model_copy(update={"stream": "calm"})]
    book.add(calm)
    assert book.flapping({"kraken", "calm"}, NOW, threshold=3) == 0
    flaps = [
        move(*(("warming", "active") if n % 2 else ("active", "warming")), 0.9 - n * 0.1)
        for n in range(5)
    ]
    book.add(flaps[:3])
    assert book.flapping({"kraken", "calm"}, NOW, threshold=3) == 0
    book.add(flaps[3:])
    assert book.flapping({"kraken", "calm"}, NOW, threshold=3) == 1
    restless = [e.model_copy(update={"stream": "restless"}) for e in flaps]
    book.load("restless", restless, known_from=NOW - DAY)
    assert book.flapping({"kraken", "calm", "restless"}, NOW, threshold=3) == 2
    book.trim(NOW - timedelta(minutes=40))  # three of five left: too few to flap at 3
    assert book.flapping({"kraken", "calm", "restless"}, NOW, threshold=3) == 0
    assert book.flapping({"kraken", "calm", "restless"}, NOW, threshold=1) == 2


def test_age_trace_keeps_the_worst_age_in_bounded_slots() -> None:
    """A day of samples each second fits the same 8 slots; a late beat survives merging."""
    from perseus_core.present.trace import OFFLINE, AgeTrace, resample

    trace = AgeTrace(NOW, slots=8)
    for second in range(8):
        trace.record(NOW + timedelta(seconds=second), 1.0 + second % 3)
    assert trace.values() == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]
    trace.record(NOW + timedelta(seconds=9), 40.0)  # past the slots: merged once
    assert trace.step_s == 2.0
    assert trace.values() == [2.0, 3.0, 3.0, 2.0, 40.0]
    for second in range(10, 86_400, 7):
        trace.record(NOW + timedelta(seconds=second), None if second > 86_000 else 1.0)
    values = trace.values()
    assert len(values) <= 8 and trace.step_s >= 86_400 / 8
    assert values[0] == 40.0  # the late heartbeat is still there, a day later
    assert values[-1] == 1.0 or values[-1] == OFFLINE
    assert resample([1.0, 5.0, 2.0, 2.0], 2) == [5.0, 2.0]


def test_a_followed_heartbeat_is_written_in_when_the_trace_is_drawn() -> None:
    """Told the heartbeat moment, a trace writes the growing age into each slot
    when caught up (the age at the slot's end, the worst there); a new
    heartbeat starts again from zero, no status reads as offline, and another
    read's dating of the same heartbeat changes nothing."""
    from perseus_core.present.trace import OFFLINE, AgeTrace

    def at(seconds: float) -> datetime:
        return NOW + timedelta(seconds=seconds)

    trace = AgeTrace(NOW, slots=8)
    trace.follow(NOW, at(-2))
    assert trace.values() == [2.0]
    trace.catch_up(at(3.5))
    assert trace.values() == [3.0, 4.0, 5.0, 5.5]
    assert trace.follows(at(-1.9)) and not trace.follows(at(4)) and not trace.follows(None)
    trace.follow(at(4), at(4))  # a new heartbeat at 4 s
    trace.catch_up(at(6))
    assert trace.values() == [3.0, 4.0, 5.0, 6.0, 1.0, 2.0]
    trace.follow(at(7), None)  # the key is gone
    assert trace.follows(None)
    trace.catch_up(at(9))  # past the 8 slots: merged once
    assert trace.step_s == 2.0
    assert trace.values() == [4.0, 6.0, 2.0, 3.0, OFFLINE]
    trace.catch_up(at(8))  # a clock that stepped back changes nothing
    assert trace.values() == [4.0, 6.0, 2.0, 3.0, OFFLINE]


def test_heartbeats_followed_unseen_are_written_in_alike() -> None:
    """A trace followed through many heartbeats and drawn only at the end
    shows what one drawn after each heartbeat shows (merged slots included),
    and keeps at most `PENDING_MAX` of them unwritten meanwhile."""
    from perseus_core.present.trace import PENDING_MAX, AgeTrace

    drawn, unseen = AgeTrace(NOW, slots=16), AgeTrace(NOW, slots=16)
    for n in range(60):
        at = NOW + timedelta(seconds=2 * n)
        beat = at - timedelta(seconds=0.5 + n % 3) if n % 7 else None  # now and then no key
        for trace in (drawn, unseen):
            trace.follow(at, beat)
        drawn.catch_up(at)
        assert len(unseen._pending) <= PENDING_MAX
    end = NOW + timedelta(seconds=121)
    drawn.catch_up(end)
    unseen.catch_up(end)
    assert unseen.step_s == drawn.step_s == 8.0
    assert unseen.values() == drawn.values()


def test_a_large_fleet_shares_out_the_entries_kept() -> None:
    """However many exchanges write, the book keeps about `KEPT_IN_FLEET`
    entries: each exchange its share, the newest, with the time before them
    unknown."""
    book = TimelineBook()
    exchanges = KEPT_IN_FLEET // 10
    for n in range(exchanges - 1):
        book.load(f"ex{n}", [], known_from=None)
    book.load("kraken", [], known_from=None)
    share = book.limit
    assert share == max(KEPT_AT_LEAST, KEPT_IN_FLEET // exchanges) < KEPT_PER_EXCHANGE
    newest = [error(n / 3600) for n in range(share)]
    book.add([error((share + n) / 3600) for n in range(5)][::-1] + newest[::-1])
    history = book.history("kraken")
    assert history is not None and [e.id for e in history.entries] == [e.id for e in newest[::-1]]
    assert history.known_from is not None
