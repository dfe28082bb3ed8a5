"""The status an instance starts from, before it has claimed anything."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from perseus_core import __version__
from perseus_core.plumbing.processes import process_scope
from perseus_core.wire.models import ConnectionState, InstanceStatus, validate_exchange_name


def validate_identity(exchange_id: int, exchange_name: str, symbol_count: int) -> None:
    """Refuse what would make a bad status key or activity stream.

    Raises:
        ValueError: a bad exchange name, a negative exchange id or symbol count.
    """
    validate_exchange_name(exchange_name)
    if exchange_id < 0:
        raise ValueError(f"exchange_id must be >= 0, got {exchange_id}")
    if symbol_count < 0:
        raise ValueError(f"symbol_count must be >= 0, got {symbol_count}")


def initial_status(
    exchange_id: int,
    exchange_name: str,
    hostname: str,
    instance_id: str,
    now: datetime,
    **fields: Any,
) -> InstanceStatus:
    """The status of a new instance: idle, nothing claimed, no error."""
    return InstanceStatus(
        exchange_id=exchange_id,
        exchange_name=exchange_name,
        hostname=hostname,
        ip_address=None,
        country_code=None,
        connection_state=ConnectionState.IDLE,
        connected_at=None,
        last_heartbeat=now,
        last_state_change=now,
        registered_at=now,
        last_error=None,
        last_error_at=None,
        instance_id=instance_id,
        epoch=None,
        pid=os.getpid(),
        pid_scope=process_scope(),
        version=__version__,
        **fields,
    )
