"""Webhook notifications (Discord-compatible) for what happens in the fleet.

`events` says what is worth a message (another writer's error as that
writer's, as `perseus_core.present.writers` decides it), `discord` how it
reads (and how the webhook's secret stays out of logs), `sender` how it is
delivered, `presence` when an exchange is lost or back (as
`perseus_core.present.edges` decides it for every surface) and who holds it
now, and `notifier` ties them together.
"""

from perseus_core.notify.discord import (
    build_payload,
    discord_text,
    redact_webhook_url,
    validate_webhook_url,
)
from perseus_core.notify.events import (
    COLOURS,
    EventKind,
    FleetEvent,
    event_from_entry,
    offline_event,
    online_event,
)
from perseus_core.notify.notifier import Notifier
from perseus_core.notify.sender import NotifierStats, retry_delay

__all__ = [
    "COLOURS",
    "EventKind",
    "FleetEvent",
    "Notifier",
    "NotifierStats",
    "build_payload",
    "discord_text",
    "event_from_entry",
    "offline_event",
    "online_event",
    "redact_webhook_url",
    "retry_delay",
    "validate_webhook_url",
]
