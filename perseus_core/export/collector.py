"""The metrics of one scrape, as Prometheus metric families (docs/monitoring.md).

`FleetCollector` is a prometheus_client custom collector: `collect()` yields
metric families built from a cached fleet reading (`FleetReading`), the
stream counters (`StreamCounters`) and the exporter's own health. It never
talks to Redis: the reading is taken before, in the event loop, so the
families can be built and rendered anywhere.

How an exchange looks is the presenter's verdict, never a second
interpretation: its state word (`status_word`: a live instance's state, or
`unreadable`, `ready`, `offline`), its heartbeat age and health judged by
the holder's own timing (`heartbeat`, `Heartbeat.health`), its uptime
(`uptime_s`), exactly as `perseus status --json` and the dashboard say them.

Every label value is cleaned (`clean`: control characters and escape
sequences removed, cut to `NAME_CHARS`); prometheus_client escapes what the
text format needs (backslash, quote, newline). Markup means nothing to
Prometheus, so it is left as text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from perseus_core.export.counters import NAME_CHARS, StreamCounters
from perseus_core.export.reading import FleetReading, ReadHealth
from perseus_core.present import Timing, heartbeat, status_word, uptime_s
from perseus_core.store.network.views import NOT_AN_ID, ExchangeView, ViewKind
from perseus_core.wire.models import CommandType, ConnectionState
from perseus_core.wire.text import clean

STATE_WORDS: tuple[str, ...] = (
    *(state.value for state in ConnectionState),
    ViewKind.UNREADABLE.value,
    ViewKind.READY.value,
    ViewKind.OFFLINE.value,
)
"""Every value of `perseus_exchange_state`'s `state` label: the six lifecycle
states of a live instance, and what an exchange without a readable status
is (`status_word`)."""

HEARTBEAT_LATENESS: dict[str, int] = {"fresh": 0, "late": 1, "overdue": 2}
"""`Heartbeat.health` -> the value of `perseus_exchange_heartbeat_late`."""

INITIALISED_COMMANDS: tuple[str, ...] = (CommandType.START.value, CommandType.STOP.value)
"""Commands whose `error` outcome is exported at 0 for every listed exchange,
so that the first failure is an increase (`increase()` needs a sample before it)."""

EXCHANGE_LABELS = ("exchange_id", "exchange_name")


@dataclass(frozen=True, slots=True)
class ExporterHealth:
    """The exporter's own figures at one scrape.

    Attributes:
        reads: how its reads of Redis go (up, errors).
        scrape_s: how long the scrape waited for its fleet read (about 0
            when it was cached).
        tail_up: whether the activity tail is connected.
    """

    reads: ReadHealth
    scrape_s: float
    tail_up: bool


def exchange_label(view: ExchangeView) -> str:
    """The `exchange_name` label of a view: its name, else its title, cleaned."""
    return clean(view.exchange_name or view.display_name, NAME_CHARS)


class FleetCollector:
    """The families of one scrape (a prometheus_client `Collector`).

    Made per scrape from what the exporter holds at that moment: the counters
    are a copy, the reading is immutable, so `collect()` may run in another
    thread while the tail goes on counting.
    """

    def __init__(
        self,
        reading: FleetReading | None,
        counters: StreamCounters,
        health: ExporterHealth,
        timing: Timing,
    ) -> None:
        """Args:
        reading: the fleet reading to show (None: Redis was never read; only
            the exporter's own figures are shown).
        counters: the stream counters (a copy: see the class docstring).
        health: the exporter's own figures.
        timing: this reader's timing settings (`Timing.from_settings`): each
            holder is still judged by its own heartbeat timing.
        """
        self._reading = reading
        self._counters = counters
        self._health = health
        self._timing = timing

    def collect(self) -> Iterator[Metric]:
        """Every family: the exchanges', the stream counters', the exporter's."""
        names: dict[int, str] = {}
        if self._reading is not None:
            yield from self._exchange_families(self._reading, names)
        yield from self._counter_families(names)
        yield from self._exporter_families()

    def _exchange_families(self, reading: FleetReading, names: dict[int, str]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "perseus_exchange_up",
            "1 while the exchange's status key exists and its payload is valid, else 0.",
            labels=EXCHANGE_LABELS,
        )
        state = GaugeMetricFamily(
            "perseus_exchange_state",
            "1 for the exchange's current state (a live instance's lifecycle state, or "
            "unreadable, ready, offline), 0 for the others.",
            labels=(*EXCHANGE_LABELS, "state"),
        )
        age = GaugeMetricFamily(
            "perseus_exchange_heartbeat_age_seconds",
            "Seconds since the holder's last heartbeat (dated by the key's TTL on Redis's clock).",
            labels=EXCHANGE_LABELS,
        )
        late = GaugeMetricFamily(
            "perseus_exchange_heartbeat_late",
            "0 fresh, 1 late, 2 overdue: the heartbeat age judged by the holder's own timing.",
            labels=EXCHANGE_LABELS,
        )
        uptime = GaugeMetricFamily(
            "perseus_exchange_uptime_seconds",
            "Seconds an active instance has run (stops at its last heartbeat once overdue).",
            labels=EXCHANGE_LABELS,
        )
        agents = GaugeMetricFamily(
            "perseus_exchange_agents_present",
            "Perseus agents running for the exchange (unexpired presence members).",
            labels=EXCHANGE_LABELS,
        )
        now = reading.snapshot.taken_at
        for view in reading.snapshot.exchanges:
            if view.exchange_id == NOT_AN_ID:  # a catalog field that names no exchange
                continue
            labels = [str(view.exchange_id), exchange_label(view)]
            names[view.exchange_id] = labels[1]
            up.add_metric(labels, 1 if view.status is not None else 0)
            word = status_word(view)
            for candidate in STATE_WORDS:
                state.add_metric([*labels, candidate], 1 if candidate == word else 0)
            agents.add_metric(labels, reading.agents.get(view.exchange_id, len(view.agents)))
            beat = heartbeat(view, now, self._timing)
            if beat is None:
                continue
            age.add_metric(labels, beat.age_s)
            late.add_metric(labels, HEARTBEAT_LATENESS[beat.health])
            running = uptime_s(view, now, beat)
            if running is not None:
                uptime.add_metric(labels, running)
        yield from (up, state, age, late, uptime, agents)
        if reading.clock_skew_s is not None:
            yield GaugeMetricFamily(
                "perseus_redis_clock_skew_seconds",
                "Redis's clock minus the exporter host's clock (positive: Redis is ahead).",
                value=reading.clock_skew_s,
            )
        yield GaugeMetricFamily(
            "perseus_exporter_fleet_read_duration_seconds",
            "How long the latest successful fleet read took.",
            value=reading.read_s,
        )

    def _counter_families(self, names: dict[int, str]) -> Iterator[Metric]:
        """The stream counters. Every listed exchange gets its errors and its
        failed starts and stops at 0 (so the first one is an increase); other
        series appear at their first entry."""
        counters = self._counters

        def labels(exchange_id: int) -> list[str]:
            return [str(exchange_id), names.get(exchange_id) or counters.names.get(exchange_id, "")]

        transitions = CounterMetricFamily(
            "perseus_exchange_transitions",
            "State transitions written to the exchange's activity stream since the exporter "
            "started, by the state entered.",
            labels=(*EXCHANGE_LABELS, "to_state"),
        )
        for (exchange_id, to_state), count in sorted(counters.transitions.items()):
            transitions.add_metric([*labels(exchange_id), to_state], count)
        errors = CounterMetricFamily(
            "perseus_exchange_errors",
            "Error entries written to the exchange's activity stream since the exporter started.",
            labels=EXCHANGE_LABELS,
        )
        for exchange_id in sorted(set(names) | set(counters.errors)):
            errors.add_metric(labels(exchange_id), counters.errors.get(exchange_id, 0))
        commands = CounterMetricFamily(
            "perseus_commands",
            "Audited command outcomes (success, error, no_result) since the exporter started.",
            labels=(*EXCHANGE_LABELS, "command", "outcome"),
        )
        counted = dict(counters.commands)
        for exchange_id in names:
            for command in INITIALISED_COMMANDS:
                counted.setdefault((exchange_id, command, "error"), 0)
        for (exchange_id, command, outcome), count in sorted(counted.items()):
            commands.add_metric([*labels(exchange_id), command, outcome], count)
        yield from (transitions, errors, commands)
        yield CounterMetricFamily(
            "perseus_exporter_entries_skipped",
            "Activity entries that name no exchange (not counted per exchange).",
            value=counters.skipped,
        )

    def _exporter_families(self) -> Iterator[Metric]:
        health = self._health
        yield GaugeMetricFamily(
            "perseus_exporter_redis_up",
            "1 if the latest fleet read succeeded; 0 while Redis cannot be read "
            "(the exchange metrics then keep their last values).",
            value=1 if health.reads.redis_up else 0,
        )
        yield CounterMetricFamily(
            "perseus_exporter_redis_errors",
            "Fleet reads that failed since the exporter started.",
            value=health.reads.redis_errors,
        )
        yield GaugeMetricFamily(
            "perseus_exporter_tail_up",
            "1 while the activity tail (the source of the stream counters) is connected.",
            value=1 if health.tail_up else 0,
        )
        yield GaugeMetricFamily(
            "perseus_exporter_scrape_duration_seconds",
            "How long the scrape that built this page waited for its fleet read "
            "(about 0 when the read was cached).",
            value=health.scrape_s,
        )
