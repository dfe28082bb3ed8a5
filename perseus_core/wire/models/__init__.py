"""Pydantic models of the wire format (docs/wire-format.md), one per payload kind.

Every value read from Redis is untrusted: parsing never raises anything but
`PayloadError`, whose message says what is wrong in words a person can act on.
One module per kind: `base` (states, timestamps, shared validation), `status`,
`entries` (activity streams), `control` (commands and replies), `catalog`
(catalog entries and agent presence).
"""

from perseus_core.wire.models.base import (
    MAX_COUNT,
    MAX_EXCHANGE_ID,
    MAX_INTERVAL_MS,
    MAX_PAYLOAD_BYTES,
    MAX_PID,
    MAX_TTL_MS,
    ConnectionState,
    WireTime,
    describe_validation_error,
    share_fields_set,
    shared_json_validator,
    validate_exchange_name,
)
from perseus_core.wire.models.catalog import AgentPresence, CatalogEntry
from perseus_core.wire.models.control import Command, CommandReply, CommandType, ReplyStatus
from perseus_core.wire.models.entries import (
    NO_EXCHANGE_NAME,
    ActivityEntry,
    CommandEntry,
    ErrorEntry,
    HolderEntry,
    OtherEntry,
    RestartEntry,
    StateTransitionEntry,
    holder_process,
    names_no_exchange,
    parse_entry,
    restart_words,
)
from perseus_core.wire.models.status import (
    LIVERMORE_INTERVAL_MS,
    LIVERMORE_TTL_MS,
    InstanceStatus,
    WriterTiming,
)

__all__ = [
    "LIVERMORE_INTERVAL_MS",
    "LIVERMORE_TTL_MS",
    "MAX_COUNT",
    "MAX_EXCHANGE_ID",
    "MAX_INTERVAL_MS",
    "MAX_PAYLOAD_BYTES",
    "MAX_PID",
    "MAX_TTL_MS",
    "NO_EXCHANGE_NAME",
    "ActivityEntry",
    "AgentPresence",
    "CatalogEntry",
    "Command",
    "CommandEntry",
    "CommandReply",
    "CommandType",
    "ConnectionState",
    "ErrorEntry",
    "HolderEntry",
    "InstanceStatus",
    "OtherEntry",
    "ReplyStatus",
    "RestartEntry",
    "StateTransitionEntry",
    "WireTime",
    "WriterTiming",
    "describe_validation_error",
    "holder_process",
    "names_no_exchange",
    "parse_entry",
    "restart_words",
    "share_fields_set",
    "shared_json_validator",
    "validate_exchange_name",
]
