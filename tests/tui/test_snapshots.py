"""Snapshot tests of every screen, from the same app factory, data and frozen clock as
`make screenshots` (perseus_cli.apps.screenshots).

Update after an intended change with `make snapshots`, then look at the report
or at the regenerated SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.apps.screenshots import (
    SHOTS,
    Shot,
    screenshot_app,
    seed_fleet,
    unreachable_run_before,
)

SnapCompare = Callable[..., bool]


@pytest.mark.parametrize("shot", SHOTS, ids=lambda shot: shot.name)
def test_screen(shot: Shot, snap_compare: SnapCompare, redis_url: str) -> None:
    """Each screen as `make screenshots` renders it (see Shot.description)."""
    shot.seed(redis_url)
    app = shot.make_app(redis_url)
    assert snap_compare(app, terminal_size=shot.size, run_before=shot.run_before)


def test_redis_unreachable(snap_compare: SnapCompare, fresh_redis: RedisServer) -> None:
    """Redis goes away after the fleet loaded: banner with countdown, cards kept but stale."""
    seed_fleet(fresh_redis.url)
    app = screenshot_app(fresh_redis.url)
    assert snap_compare(
        app, terminal_size=(120, 40), run_before=unreachable_run_before(fresh_redis.kill)
    )
