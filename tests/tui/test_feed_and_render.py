"""The feed widget and the pure rendering helpers, without Redis."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from textual.app import App, ComposeResult

from perseus_cli.log_cmd import _summary
from perseus_cli.status_cmd import status_row
from perseus_core.present import Tone
from perseus_core.present.commands import acknowledgement
from perseus_core.present.exchange import Part, Timing, age_text, status_line, uptime_text
from perseus_core.store.network import ExchangeView, LastKnown
from perseus_core.wire.models import (
    ActivityEntry,
    AgentPresence,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
    parse_entry,
)
from perseus_tui import render
from perseus_tui.fleet import FleetCounts
from perseus_tui.observed import OfflineObserver
from perseus_tui.widgets.activity_feed import ActivityFeed
from perseus_tui.widgets.header import fit_parts, summary_parts
from perseus_tui.widgets.instance_card import card_content

NOW = datetime(2026, 2, 10, 22, 45, tzinfo=UTC)


def entry(n: int, stream: str = "alpha", **fields: str) -> StateTransitionEntry | ErrorEntry:
    data = {"event": "error", "error": f"e{n}", "exchangeName": stream, **fields}
    parsed = parse_entry(f"{1_000 + n}-0", data, stream)
    assert isinstance(parsed, StateTransitionEntry | ErrorEntry)
    return parsed


class FeedApp(App[None]):
    def __init__(self, max_lines: int = 1000) -> None:
        super().__init__()
        self.max_lines = max_lines

    def compose(self) -> ComposeResult:
        yield ActivityFeed(max_lines=self.max_lines, clock=lambda: NOW, tz=UTC)


async def test_newest_first_bounded_and_deduplicated() -> None:
    app = FeedApp(max_lines=1000)
    async with app.run_test(size=(100, 20)) as pilot:
        feed = app.query_one(ActivityFeed)
        burst = [entry(n) for n in range(5_000)]
        assert feed.add_new(burst) == 5_000
        await pilot.pause()
        kept = feed.entries
        assert len(kept) == 1000
        assert [e.id for e in kept[:2]] == ["5999-0", "5998-0"]  # newest on top
        assert kept[-1].id == "5000-0"  # the oldest 4,000 were dropped
        assert feed.add_new([entry(4_999), entry(4_998)]) == 0  # already shown: dropped
        assert feed.virtual_size.height == 1000


async def test_equal_ids_in_an_exchanges_two_streams_are_both_shown() -> None:
    shared = parse_entry("1000-0", {"event": "error", "error": "e"}, "alpha", "logs:network:alpha")
    ours = parse_entry(
        "1000-0", {"event": "command", "command": "start"}, "alpha", "perseus:activity:alpha"
    )
    app = FeedApp()
    async with app.run_test(size=(100, 20)):
        assert app.query_one(ActivityFeed).add_new([shared, ours]) == 2


async def test_older_pages_never_push_newer_entries_out() -> None:
    app = FeedApp(max_lines=3)
    async with app.run_test(size=(100, 10)) as pilot:
        feed = app.query_one(ActivityFeed)
        feed.add_new([entry(10), entry(11)])
        assert feed.add_older([entry(9), entry(8), entry(7)]) == 1
        await pilot.pause()
        assert [e.id for e in feed.entries] == ["1011-0", "1010-0", "1009-0"]
        assert feed.is_full


async def test_filter_and_pause() -> None:
    app = FeedApp()
    async with app.run_test(size=(100, 10)) as pilot:
        feed = app.query_one(ActivityFeed)
        feed.add_new([entry(1, "alpha"), entry(2, "beta"), entry(3, "alpha")])
        feed.set_filter("beta")
        assert [e.stream for e in feed.visible_entries] == ["beta"]
        feed.add_new([entry(4, "beta"), entry(5, "alpha")])
        assert [e.id for e in feed.visible_entries] == ["1004-0", "1002-0"]
        feed.set_filter("")
        assert len(feed.visible_entries) == 5
        feed.paused = True
        feed.add_new([entry(6)])
        assert feed.held_count == 1 and feed.entries[0].id == "1005-0"
        feed.paused = False
        await pilot.pause()
        assert feed.held_count == 0 and feed.entries[0].id == "1006-0"


async def test_reading_older_lines_is_not_disturbed_by_new_ones() -> None:
    app = FeedApp()
    async with app.run_test(size=(100, 12)) as pilot:
        feed = app.query_one(ActivityFeed)
        feed.add_new([entry(n) for n in range(100)])
        await pilot.pause()
        feed.scroll_to(y=40, animate=False, immediate=True)
        top = feed.visible_entries[int(feed.scroll_y)].id
        feed.add_new([entry(n) for n in range(100, 105)])
        await pilot.pause()
        assert feed.visible_entries[int(feed.scroll_y)].id == top


def at(moment: str, n: int, stream: str, event: str = "error") -> ActivityEntry:
    """An entry of `stream` stamped `moment` (today at NOW's date), with its own ID."""
    fields = {"event": event, "error": f"e{n}", "exchangeName": stream}
    fields["timestamp"] = f"2026-02-10T{moment}.000Z"
    return parse_entry(f"{2_000 + n}-0", fields, stream, f"logs:network:{stream}")


async def test_entries_read_from_several_streams_are_shown_in_time_order() -> None:
    """One read of the tail hands each stream's entries together: alpha's two,
    then beta's one, which happened between them. The feed shows them by time."""
    app = FeedApp()
    async with app.run_test(size=(100, 10)):
        feed = app.query_one(ActivityFeed)
        feed.add_new([at("03:11:40", 1, "alpha"), at("03:12:02", 2, "alpha")])
        feed.add_new([at("03:11:49", 3, "beta")])
        times = [e.timestamp[11:19] for e in feed.entries]
        assert times == ["03:12:02", "03:11:49", "03:11:40"]
        feed.set_filter("beta")
        feed.add_new([at("03:11:45", 4, "beta"), at("03:11:50", 5, "beta")])
        assert [e.timestamp[11:19] for e in feed.visible_entries] == [
            "03:11:50",
            "03:11:49",
            "03:11:45",
        ]


async def test_entries_in_any_arrival_order_are_kept_in_time_order() -> None:
    """Batches from many streams, older and newer than what is shown, new
    entries and history pages, in a shuffled order: the feed holds the newest
    `max_lines` in time order, each moment's entries in the order they came
    (the place of each is found by a binary search, `_newer_count`)."""
    rng = random.Random(7)
    seconds = [rng.randrange(3_600) for _ in range(600)]  # ties among them
    made = [
        at(f"{s // 3600 + 3:02d}:{s // 60 % 60:02d}:{s % 60:02d}", n, f"s{n % 9}")
        for n, s in enumerate(seconds)
    ]
    app = FeedApp(max_lines=250)
    async with app.run_test(size=(100, 10)):
        feed = app.query_one(ActivityFeed)
        rest = list(made)
        while rest:
            size = rng.randrange(1, 40)
            batch, rest = rest[:size], rest[size:]
            if rng.random() < 0.3:
                feed.add_older(sorted(batch, key=lambda e: e.timestamp, reverse=True))
            else:
                feed.add_new(sorted(batch, key=lambda e: e.timestamp))
        kept = [e.timestamp for e in feed.entries]
        assert kept == sorted(kept, reverse=True)
        assert len(kept) == 250
        feed.set_filter("s3")
        feed.add_new([at("04:00:00", 10_000, "s3"), at("04:00:00", 10_001, "s3")])
        visible = feed.visible_entries
        assert [e.timestamp for e in visible] == sorted(
            (e.timestamp for e in visible), reverse=True
        )
        both = [e.error for e in visible if e.timestamp.endswith("04:00:00.000Z")]
        assert both[:2] == ["e10001", "e10000"]  # the later arrival above its twin


async def test_an_observation_sits_above_the_entries_it_came_after() -> None:
    """The dashboard saw beta's key gone at 03:12:05; the stream's entries of
    the stop (03:12:04) reach the feed only afterwards: they go below it."""
    observer = OfflineObserver()
    status = InstanceStatus(
        exchange_id=2,
        exchange_name="beta",
        hostname="h",
        ip_address="203.0.113.2",
        connection_state=ConnectionState.ACTIVE,
        symbol_count=1,
        connected_at=NOW,
        last_heartbeat=NOW,
        last_state_change=NOW,
        registered_at=NOW,
    )
    running = ExchangeView(2, "beta", "Beta", True, status=status)
    gone = ExchangeView(2, "beta", "Beta", True)
    (observed,) = observer.compare(
        {2: running}, {2: gone}, NOW.replace(hour=3, minute=12, second=5)
    )
    app = FeedApp()
    async with app.run_test(size=(100, 10)):
        feed = app.query_one(ActivityFeed)
        feed.add_new([at("03:12:01", 1, "beta", "state_transition")])
        feed.add_new([observed])
        feed.add_new([at("03:12:04", 2, "beta"), at("03:12:04", 3, "beta", "state_transition")])
        assert [e.id for e in feed.entries] == [observed.id, "2003-0", "2002-0", "2001-0"]


async def test_a_late_entry_above_the_lines_read_keeps_them_in_place() -> None:
    app = FeedApp()
    async with app.run_test(size=(100, 12)) as pilot:
        feed = app.query_one(ActivityFeed)
        feed.add_new([entry(n) for n in range(0, 100, 2)])
        await pilot.pause()
        feed.scroll_to(y=10, animate=False, immediate=True)
        top = feed.visible_entries[int(feed.scroll_y)].id
        feed.add_new([entry(97), entry(1)])  # one above the lines read, one below them
        await pilot.pause()
        assert feed.visible_entries[int(feed.scroll_y)].id == top
        assert [e.id for e in feed.entries[:3]] == ["1098-0", "1097-0", "1096-0"]
        assert feed.entries[-2].id == "1001-0"


def test_heartbeat_colours_and_ages() -> None:
    assert render.part_style(Part("3s ago", Tone.SUCCESS)) == "$text-success"
    assert render.part_style(Part("20s ago", Tone.WARNING)) == "$text-warning"
    assert render.part_style(Part("no heartbeat for 32s", Tone.ERROR, bold=True)).startswith("bold")
    assert age_text(NOW - timedelta(seconds=3), NOW) == "3s ago"
    view = ExchangeView(
        1, "alpha", "Alpha", True,
        _status(connected_at=NOW - timedelta(hours=4, minutes=23, seconds=5)), key_exists=True,
    )  # fmt: skip
    assert uptime_text(view, NOW, Timing()) == "4h 23m"


def test_entry_lines_show_what_happened() -> None:
    transition = parse_entry(
        "1-0",
        {"event": "state_transition", "fromState": "warming", "toState": "active",
         "exchangeName": "coinbase", "timestamp": "2026-02-10T22:44:00Z"},
        "coinbase",
    )  # fmt: skip
    line = render.entry_line(transition, UTC, NOW).plain
    assert line.startswith("22:44:00") and "coinbase" in line and "warming → active" in line
    command = CommandEntry(command="stop", operator="alice", status="error", message="nope")
    assert "stop by alice: error · nope" in render.entry_line(command, UTC, NOW).plain
    odd = parse_entry("2-0", {"event": "mystery", "k": "v"}, "x")
    assert (
        "mystery" in render.entry_line(odd, UTC, NOW).plain
        and "k=v" in render.entry_line(odd, UTC, NOW).plain
    )
    bare = parse_entry("3-0", {}, "x")  # no fields at all: still a line
    assert "(no event)" in render.entry_line(bare, UTC, NOW).plain


def test_a_crash_line_names_its_state_once() -> None:
    """An agent's crash message already says `while active`: neither the feed
    nor `perseus log` adds the state again; a message that does not say it
    gets it from the entry's state."""
    crash = ErrorEntry(error="child command exited with code 75 while active", state="active")
    line = render.entry_line(crash, UTC, NOW).plain
    assert line.count("active") == 1 and " in active" not in line
    assert _summary(crash).count("active") == 1
    plain = ErrorEntry(error="websocket closed (1006)", state="warming")
    assert "websocket closed (1006)  in warming" in render.entry_line(plain, UTC, NOW).plain
    assert _summary(plain) == "error: websocket closed (1006) (while warming)"
    inactive = ErrorEntry(error="catalog entry is inactive", state="active")
    assert "in active" in render.entry_line(inactive, UTC, NOW).plain  # a word, not a substring


def _status(**overrides: object) -> InstanceStatus:
    values: dict[str, object] = {
        "exchange_id": 1, "exchange_name": "alpha", "hostname": "h",
        "connection_state": ConnectionState.ACTIVE, "last_heartbeat": NOW - timedelta(seconds=3),
        "last_state_change": NOW - timedelta(hours=1), "registered_at": NOW - timedelta(hours=1),
        "connected_at": NOW - timedelta(hours=1),
    }  # fmt: skip
    values.update(overrides)
    return InstanceStatus(**values)  # type: ignore[arg-type]


def test_card_shows_hostile_text_literally_without_control_characters() -> None:
    hostile = "[b]x[/b][@click=app.quit]q[/]\x1b[31m\x07\u202e"
    view = ExchangeView(
        1, "alpha", hostile, True, _status(hostname=hostile, last_error=hostile,
                                           last_error_at=NOW), key_exists=True,
    )  # fmt: skip
    content = card_content(view, NOW, width=60)
    assert "[b]x[/b][@click=app.quit]q[/]" in content.plain
    assert not any(ch in content.plain for ch in "\x1b\x07\u202e")
    assert all(span.style == "" or "@click" not in str(span.style) for span in content.spans)


def test_offline_and_corrupt_cards() -> None:
    known = LastKnown(
        "old-host", "192.0.2.1", "stopped", "2026-02-10T20:42:00Z", "state_transition", "1-0"
    )
    offline = ExchangeView(7, "bybit", "Bybit", True, last_known=known)
    text = card_content(offline, NOW, width=34).plain
    assert "OFFLINE" in text and "old-host" in text and "stopped" in text and "2h 3m ago" in text
    corrupt = ExchangeView(
        8, "kucoin", "KuCoin", True, error="status payload is not valid JSON", key_exists=True
    )
    text = card_content(corrupt, NOW, width=34).plain
    assert "BAD STATUS" in text and "not valid JSON" in text


def _agent(host: str, pid: int, since: datetime | None = None) -> AgentPresence:
    return AgentPresence(
        agent_id=f"{host}:{pid}:1", exchange_id=9, hostname=host, pid=pid, since=since
    )


def test_a_card_with_an_idle_agent_says_ready_instead_of_offline() -> None:
    known = LastKnown("bfx-01", "", "idle", "2026-02-10T22:30:00Z", "state_transition", "1-0")
    one = ExchangeView(
        9, "bitfinex", "Bitfinex", True, last_known=known,
        agents=(_agent("bfx-01", 5150, NOW - timedelta(minutes=15)),),
    )  # fmt: skip
    text = card_content(one, NOW, width=34).plain
    assert "READY" in text and "OFFLINE" not in text
    assert "agent on bfx-01 · pid 5150" in text and "Idle for 15m 0s" in text
    assert "last" in text and "idle" in text and "agents ready" not in text
    pair = ExchangeView(
        9, "bitfinex", "Bitfinex", True, agents=(_agent("bfx-01", 1), _agent("bfx-02", 2))
    )
    text = card_content(pair, NOW, width=34).plain
    assert "2 agents ready · also bfx-02" in text and "agent on bfx-01" in text
    # An online exchange is shown by its status, whatever agents there are.
    online = ExchangeView(
        9, "bitfinex", "Bitfinex", True, _status(), key_exists=True, agents=(_agent("a", 1),)
    )
    assert not online.ready and "READY" not in card_content(online, NOW, width=34).plain


def test_an_offline_card_without_a_known_state_says_unknown() -> None:
    known = LastKnown("h", "", "", "2026-02-10T22:30:00Z", "command", "1-0")
    view = ExchangeView(7, "bybit", "Bybit", True, last_known=known)
    text = card_content(view, NOW, width=34).plain
    assert "state unknown" in text and "command" not in text


def test_header_counts_ready_exchanges_apart_from_offline_ones() -> None:
    summary = fit_parts(summary_parts({"active": 1, "unreadable": 1}, 5, ready=2), 200).plain
    assert "2 of 5 online" in summary and "1 offline" in summary and "2 ready" in summary
    assert "offline" not in fit_parts(summary_parts({"active": 1}, 2, ready=1), 200).plain


def _fleet_view(exchange_id: int, kind: str) -> ExchangeView:
    """A view of each kind the header counts: a state, `unreadable`, `ready`, `offline`."""
    name = f"Ex{exchange_id % 3}"  # names shared by several views
    if kind in ("unreadable", "ready", "offline"):
        agents = (AgentPresence(agent_id="a", exchange_id=exchange_id),) if kind == "ready" else ()
        return ExchangeView(
            exchange_id, name, name, True, key_exists=kind == "unreadable", agents=agents
        )
    status = _status(
        exchange_id=exchange_id, exchange_name=name, connection_state=ConnectionState(kind)
    )
    return ExchangeView(exchange_id, name, name, True, status=status)


def test_header_counts_follow_a_partial_read_as_a_full_count_would() -> None:
    """`FleetCounts.update` recounts only the exchanges read again, and ends
    where counting the whole fleet again would."""
    kinds = ("active", "warming", "idle", "unreadable", "ready", "offline")
    views = {n: _fleet_view(n, kinds[n % len(kinds)]) for n in range(1, 31)}
    counts = FleetCounts(views)
    assert counts.online == {"active": 5, "warming": 5, "idle": 5, "unreadable": 5}
    assert counts.ready == 5 and counts.names == {"ex0": 10, "ex1": 10, "ex2": 10}

    changed = {
        1: _fleet_view(1, "offline"),
        4: _fleet_view(4, "stopping"),
        5: _fleet_view(5, "active"),
    }
    changed[5] = replace(changed[5], exchange_name="Renamed")
    after = {**views, **changed}
    counts.update(after, changed)
    recounted = FleetCounts(after)
    assert counts.views is after
    assert (
        counts.online
        == recounted.online
        == {"active": 6, "warming": 4, "idle": 5, "unreadable": 5, "stopping": 1}
    )
    assert counts.ready == recounted.ready == 4
    assert (
        counts.names == recounted.names and counts.names["ex2"] == 9 and "renamed" in counts.names
    )


def test_command_outcomes_do_not_repeat_themselves() -> None:
    """An agent's ack says "acknowledged by vm": shown once, not "ack acknowledged by vm"."""
    ack = CommandEntry(
        command="start", operator="root@vm", status="ack", message="acknowledged by vm"
    )
    assert render.entry_line(ack, UTC, NOW).plain.endswith("⚑ start by root@vm: acknowledged by vm")
    assert render.command_outcome("ack", "").plain == "acknowledged"
    assert render.command_outcome("success", "kraken is active").plain == (
        "success · kraken is active"
    )
    assert acknowledgement("acknowledged by vm") == "Acknowledged by vm"
    assert acknowledgement("") == "Acknowledged by the agent"
    assert acknowledgement("repeat of a command already handled; not run again") == (
        "Acknowledged: repeat of a command already handled; not run again"
    )


def test_a_narrow_header_drops_whole_counts_and_says_how_many() -> None:
    online = {"active": 1, "warming": 1, "starting": 1, "stopping": 1, "unreadable": 1}
    parts = summary_parts(online, 9, ready=1)
    full = fit_parts(parts, 200).plain
    assert full.startswith("5 of 9 online  3 offline  1 unreadable  1 ready  1 active")
    narrow = fit_parts(parts, 60).plain
    assert len(narrow) <= 60 and narrow.endswith(" more") and "…" not in narrow
    assert narrow.startswith("5 of 9 online  3 offline")
    assert fit_parts(parts, 8).plain == "5 of 9 …"


def test_perseus_status_lays_out_the_presenters_line_word_for_word() -> None:
    """Each kind of exchange as `perseus status` prints it: the presenter's
    words in `STATUS_HEADERS` order, the state and the heartbeat in their
    tones' terminal styles (no style for none), the notes joined by `; `."""
    known = LastKnown(
        "old-host", "192.0.2.1", "stopped", "2026-02-10T20:42:00Z", "state_transition", "1-0"
    )
    skew = "clock skew: the writer's clock is 6.0 s ahead of Redis (age from the key's TTL)"
    none = ("-", "")
    expected = [
        (
            ExchangeView(
                1, "alpha", "Alpha", True,
                _status(last_error="boom", last_error_at=NOW - timedelta(minutes=2)),
                key_exists=True, heartbeat_at=NOW - timedelta(seconds=9),
            ),
            ["1", "alpha", ("active", "green"), "h", "-", ("9s ago", "green"), "1h 0m",
             f"{skew}; last error 2m 0s ago: boom"],
        ),
        (
            ExchangeView(
                2, "beta", "Beta", False, _status(connection_state=ConnectionState.WARMING)
            ),
            ["2", "beta", ("warming", "magenta"), "h", "-", ("3s ago", "green"), "-",
             "not in catalog"],
        ),
        (
            ExchangeView(7, "bybit", "Bybit", True, last_known=known),
            ["7", "bybit", ("offline", "red"), "old-host", "192.0.2.1", none, "-",
             "last entry 2h 3m ago (stopped)"],
        ),
        (
            ExchangeView(7, "never", "Never", True),
            ["7", "never", ("offline", "red"), "-", "-", none, "-", "never seen"],
        ),
        (
            ExchangeView(8, "kucoin", "KuCoin", True, error="not JSON", key_exists=True),
            ["8", "kucoin", ("unreadable", "red"), "-", "-", none, "-", "error: not JSON"],
        ),
        (
            ExchangeView(
                9, "bitfinex", "Bitfinex", True, last_known=known,
                agents=(_agent("bfx-01", 1, NOW - timedelta(minutes=15)), _agent("bfx-02", 2)),
            ),
            ["9", "bitfinex", ("ready", "blue"), "bfx-01", "-", none, "-",
             "agent pid 1 ready for 15m 0s; 2 agents ready (also bfx-02); last stopped 2h 3m ago"],
        ),
    ]  # fmt: skip
    for view, cells in expected:
        row = status_row(status_line(view, NOW, Timing()))
        printed = [cell if isinstance(cell, str) else (cell.plain, cell.style) for cell in row]
        assert printed == cells, view.exchange_name


def test_runs_join_neighbours_of_one_style_and_keep_every_character() -> None:
    """A strip's cells in one style become one span (the table draws each span
    on its own); styles keep their places and unstyled text gets no span."""
    pieces = [("█", "$success")] * 5 + [("✖", "$error"), ("█", "$success"), (" ", ""), ("·", "")]
    joined = render.runs(pieces)
    assert joined.plain == "".join(text for text, _ in pieces)
    spans = [(span.start, span.end, span.style) for span in joined.spans]
    assert spans == [(0, 5, "$success"), (5, 6, "$error"), (6, 7, "$success")]
    assert render.runs([]).plain == ""


async def test_a_batch_larger_than_the_feed_places_only_its_newest_unseen_entries() -> None:
    """A flood hands the feed more than it keeps: the newest entries not shown
    yet fill it, in time order, each once, and all the unseen ones count as new."""
    app = FeedApp(max_lines=100)
    async with app.run_test(size=(100, 10)):
        feed = app.query_one(ActivityFeed)
        assert feed.add_new([entry(n, f"s{n % 7}") for n in range(50)]) == 50
        flood = [entry(n, f"s{n % 7}") for n in range(30, 400)]
        flood += flood[-20:]  # the same entries twice in one batch
        assert feed.add_new(flood) == 350  # 370 in the batch, 20 of them shown already
        ids = [e.id for e in feed.entries]
        assert ids == [f"{1_000 + n}-0" for n in range(399, 299, -1)]
        assert feed.add_new(flood) == 0


async def test_a_paused_feed_holds_the_newest_entries_in_time_not_the_last_to_arrive() -> None:
    """A read of many streams hands entries over out of time order: while
    paused the feed keeps the newest `max_lines` by time, so on resume a
    stream's newest entry is there even though older ones arrived after it."""
    app = FeedApp(max_lines=3)
    async with app.run_test(size=(100, 10)) as pilot:
        feed = app.query_one(ActivityFeed)
        feed.paused = True
        feed.add_new([entry(10, "alpha")])
        feed.add_new([entry(1, "beta"), entry(2, "gamma"), entry(3, "delta")])
        assert feed.held_count == 4
        feed.paused = False
        await pilot.pause()
        assert [(e.stream, e.id) for e in feed.entries] == [
            ("alpha", "1010-0"),
            ("delta", "1003-0"),
            ("gamma", "1002-0"),
        ]
