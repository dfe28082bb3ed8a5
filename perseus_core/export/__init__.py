"""Fleet metrics for Prometheus (`perseus exporter`; docs/monitoring.md).

- `reading`: the cached, shared fleet read a scrape answers from.
- `counters`: transitions, errors and command outcomes counted from the
  activity streams since the exporter started.
- `collector`: the metric families of one scrape (a prometheus_client collector).
- `http`: the small HTTP server, in the exporter's own event loop.
- `exporter`: `Exporter`, which runs the three together.

Part of the `app` extra (prometheus-client), like the notifier: a service
that embeds perseus_core never loads it.
"""

from perseus_core.export.collector import STATE_WORDS, ExporterHealth, FleetCollector
from perseus_core.export.counters import StreamCounters
from perseus_core.export.exporter import Exporter
from perseus_core.export.http import MetricsServer, parse_listen
from perseus_core.export.reading import FleetReading, FleetReadings, ReadHealth

__all__ = [
    "STATE_WORDS",
    "Exporter",
    "ExporterHealth",
    "FleetCollector",
    "FleetReading",
    "FleetReadings",
    "MetricsServer",
    "ReadHealth",
    "StreamCounters",
    "parse_listen",
]
