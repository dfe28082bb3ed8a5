"""Exceptions that callers are expected to catch and show to a person."""

from __future__ import annotations


class PerseusError(Exception):
    """Base class of every error Perseus raises on purpose."""


class RedisUnavailable(PerseusError):
    """Redis could not be reached; the message names the (redacted) target."""


class PayloadError(PerseusError):
    """A value read from Redis is not what the wire format says it should be."""


class InvalidTransition(PerseusError):
    """A lifecycle transition that docs/wire-format.md 1.2 does not allow."""


class CommandRejected(PerseusError):
    """A control command that cannot be executed (the message says why)."""


class AccessDenied(PerseusError):
    """Redis's ACL refused a command (NOPERM); the message names the command and key."""
