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
sequences removed, cut to `NAME_CHARS`) and escaped as both exposition
formats want (backslash, quote, newline). Markup means nothing to
Prometheus, so it is left as text.

The families with a sample per exchange (17 samples an exchange: 170,000 at
10,000 exchanges) are written by `PerExchange`, not by prometheus_client's
encoders: those build a labels dict per sample and escape and validate every
label name and value per sample, about 35 us a sample here (6 s at 10,000
exchanges), where `PerExchange` escapes each exchange's labels once and
writes a line per sample. Its text is what the library's encoders write for
the same families, in either format (a test compares them); the few fleet-
wide families still go through the library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

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

_VALUES = {0: "0.0", 1: "1.0", 2: "2.0"}
"""The text of the commonest values, as `floatToGoString` writes them."""


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


_go_float: Callable[[float], str] = floatToGoString


def _value(value: float) -> str:
    known = _VALUES.get(value) if isinstance(value, int) else None
    return known if known is not None else _go_float(value)


class PerExchange:
    """One family with a sample per exchange (or per exchange and label),
    written as exposition text line by line (see the module docstring).

    Args:
        name: the family's name (a counter's without `_total`).
        documentation: its HELP text.
        kind: `gauge` or `counter`.
    """

    def __init__(self, name: str, documentation: str, kind: str) -> None:
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self._sample = f"{name}_total" if kind == "counter" else name
        self._lines: list[str] = []

    def add(self, labels: str, value: float) -> None:
        """A sample; `labels` is already escaped (`label_text`)."""
        self._lines.append(f"{self._sample}{{{labels}}} {_value(value)}\n")

    def text(self, openmetrics: bool) -> str:
        """The family in the text format 0.0.4, or in OpenMetrics."""
        # The text format names a counter's HELP and TYPE with its suffix, OpenMetrics without.
        named = self.name if openmetrics else self._sample
        head = (
            f"# HELP {named} {_escape_help(self.documentation, openmetrics)}\n"
            f"# TYPE {named} {self.kind}\n"
        )
        return head + "".join(self._lines)


def label_text(names: tuple[str, ...], values: list[str]) -> str:
    """`a="x",b="y"`: label values escaped for both formats."""
    return ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))


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

    def page(self, accept: str) -> bytes:
        """The whole metrics page for a scrape's Accept header: OpenMetrics when
        asked, else the text format 0.0.4 (`choose_encoder` decides, as for
        the content type)."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        text = "".join(family.text(openmetrics) for family in self.per_exchange())
        # The library's page comes last: in OpenMetrics it ends with `# EOF`.
        return text.encode() + encoder(self)

    def collect(self) -> Iterator[Metric]:
        """The fleet-wide families (a prometheus_client collector's method);
        `per_exchange` has the others."""
        if self._reading is not None:
            reading = self._reading
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
        yield CounterMetricFamily(
            "perseus_exporter_entries_skipped",
            "Activity entries that name no exchange (not counted per exchange).",
            value=self._counters.skipped,
        )
        yield from self._exporter_families()

    def per_exchange(self) -> list[PerExchange]:
        """The families with a sample per exchange: the exchanges' own, then
        the stream counters."""
        labels: dict[int, str] = {}
        families = self._exchange_families(self._reading, labels) if self._reading else []
        return [*families, *self._counter_families(labels)]

    def _exchange_families(
        self, reading: FleetReading, labels_of: dict[int, str]
    ) -> list[PerExchange]:
        """Fills `labels_of` with each listed exchange's label text."""
        up = PerExchange(
            "perseus_exchange_up",
            "1 while the exchange's status key exists and its payload is valid, else 0.",
            "gauge",
        )
        state = PerExchange(
            "perseus_exchange_state",
            "1 for the exchange's current state (a live instance's lifecycle state, or "
            "unreadable, ready, offline), 0 for the others.",
            "gauge",
        )
        age = PerExchange(
            "perseus_exchange_heartbeat_age_seconds",
            "Seconds since the holder's last heartbeat (dated by the key's TTL on Redis's clock).",
            "gauge",
        )
        late = PerExchange(
            "perseus_exchange_heartbeat_late",
            "0 fresh, 1 late, 2 overdue: the heartbeat age judged by the holder's own timing.",
            "gauge",
        )
        uptime = PerExchange(
            "perseus_exchange_uptime_seconds",
            "Seconds an active instance has run (stops at its last heartbeat once overdue).",
            "gauge",
        )
        agents = PerExchange(
            "perseus_exchange_agents_present",
            "Perseus agents running for the exchange (unexpired presence members).",
            "gauge",
        )
        now = reading.snapshot.taken_at
        state_labels = [f',state="{word}"' for word in STATE_WORDS]
        for view in reading.snapshot.exchanges:
            if view.exchange_id == NOT_AN_ID:  # a catalog field that names no exchange
                continue
            labels = labels_of[view.exchange_id] = label_text(
                EXCHANGE_LABELS, [str(view.exchange_id), exchange_label(view)]
            )
            up.add(labels, 1 if view.status is not None else 0)
            word = status_word(view)
            for candidate, suffix in zip(STATE_WORDS, state_labels, strict=True):
                state.add(labels + suffix, 1 if candidate == word else 0)
            agents.add(labels, reading.agents.get(view.exchange_id, len(view.agents)))
            beat = heartbeat(view, now, self._timing)
            if beat is None:
                continue
            age.add(labels, beat.age_s)
            late.add(labels, HEARTBEAT_LATENESS[beat.health])
            running = uptime_s(view, now, beat)
            if running is not None:
                uptime.add(labels, running)
        return [up, state, age, late, uptime, agents]

    def _counter_families(self, labels_of: dict[int, str]) -> list[PerExchange]:
        """The stream counters. Every listed exchange gets its errors, its
        restarts and its failed starts and stops at 0 (so the first one is an
        increase); other series appear at their first entry."""
        counters = self._counters

        def labels(exchange_id: int) -> str:
            known = labels_of.get(exchange_id)
            if known is None:
                name = counters.names.get(exchange_id, "")
                known = labels_of[exchange_id] = label_text(
                    EXCHANGE_LABELS, [str(exchange_id), name]
                )
            return known

        listed = list(labels_of)
        transitions = PerExchange(
            "perseus_exchange_transitions",
            "State transitions written to the exchange's activity stream since the exporter "
            "started, by the state entered.",
            "counter",
        )
        for (exchange_id, to_state), count in sorted(counters.transitions.items()):
            transitions.add(f'{labels(exchange_id)},to_state="{_escape_label(to_state)}"', count)
        errors = PerExchange(
            "perseus_exchange_errors",
            "Error entries written to the exchange's activity stream since the exporter started.",
            "counter",
        )
        for exchange_id in sorted(set(listed) | set(counters.errors)):
            errors.add(labels(exchange_id), counters.errors.get(exchange_id, 0))
        restarts = PerExchange(
            "perseus_exchange_restarts",
            "Automatic restarts the exchange's agent scheduled (restart entries in its "
            "activity stream) since the exporter started.",
            "counter",
        )
        for exchange_id in sorted(set(listed) | set(counters.restarts)):
            restarts.add(labels(exchange_id), counters.restarts.get(exchange_id, 0))
        commands = PerExchange(
            "perseus_commands",
            "Audited command outcomes (success, error, no_result) since the exporter started.",
            "counter",
        )
        counted = dict(counters.commands)
        for exchange_id in listed:
            for command in INITIALISED_COMMANDS:
                counted.setdefault((exchange_id, command, "error"), 0)
        for (exchange_id, command, outcome), count in sorted(counted.items()):
            extra = f',command="{_escape_label(command)}",outcome="{_escape_label(outcome)}"'
            commands.add(labels(exchange_id) + extra, count)
        return [transitions, errors, restarts, commands]

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
