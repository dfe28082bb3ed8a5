"""What a service embeds to be a Perseus node: `Instance`, and what its calls return."""

from perseus_core.instance.incidents import LeaseLostCallback
from perseus_core.instance.instance import Instance
from perseus_core.instance.publication import (
    MAX_ERROR_CHARS,
    MAX_UNSENT_DETAILS,
    Publication,
    StatusWrite,
)

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_UNSENT_DETAILS",
    "Instance",
    "LeaseLostCallback",
    "Publication",
    "StatusWrite",
]
