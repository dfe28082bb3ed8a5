"""`perseus exporter` refuses what it cannot serve on with one line."""

from __future__ import annotations

import socket

from perseus_core.wire.settings import Settings
from tests.helpers import invoke


def test_a_listen_address_that_is_not_host_port_is_a_usage_error(settings: Settings) -> None:
    code, out, err = invoke(settings, "exporter", "--listen", "localhost")
    assert code == 2
    assert "'localhost' is not HOST:PORT" in err and "Traceback" not in err
    code, _, err = invoke(settings, "exporter", "--listen", "127.0.0.1:70000")
    assert code == 2 and "out of range" in err


def test_a_port_in_use_ends_with_one_line(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = invoke(settings, "exporter", "--listen", f"127.0.0.1:{port}")
    assert code == 1, err
    lines = [line for line in err.splitlines() if "stopped" not in line]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], err


async def test_the_demo_serves_metrics_beside_its_fleet_and_says_where(settings: Settings) -> None:
    from perseus_cli.demo_cmd import _exporting
    from tests.export.conftest import sample, scrape

    class Fleet:
        def settings(self) -> Settings:
            return settings

    said: list[str] = []
    async with _exporting(Fleet(), True, said.append):  # type: ignore[arg-type]
        url = said[0].removeprefix("Prometheus metrics: ")
        samples = await scrape(url)
    assert samples[sample("perseus_exporter_redis_up")] == 1
