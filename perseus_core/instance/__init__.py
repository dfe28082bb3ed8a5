"""What a service embeds to be a Perseus node: `Instance`, and what its calls return."""

from perseus_core.instance.heartbeat import Heartbeat, RenewalListener
from perseus_core.instance.instance import Instance, LeaseLostCallback
from perseus_core.instance.publication import (
    MAX_ERROR_CHARS,
    MAX_UNSENT_DETAILS,
    Publication,
    Publisher,
    StatusWrite,
)

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_UNSENT_DETAILS",
    "Heartbeat",
    "Instance",
    "LeaseLostCallback",
    "Publication",
    "Publisher",
    "RenewalListener",
    "StatusWrite",
]
