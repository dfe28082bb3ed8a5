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


class RedisRefused(PerseusError):
    """Redis refused a command on a key for what the key or the server is,
    not for this user's rights (`AccessDenied`): a key of the wrong type, a
    server out of memory, a command it does not know. The message names the
    command and the key.

    Attributes:
        command: the refused command, upper-case.
        key: the key it named.
        unusable: True when Redis itself cannot serve the command (out of
            memory, a renamed or unknown command, a read-only replica), False
            when one key is broken (a wrong type) and everything else works.
    """

    def __init__(self, message: str, command: str, key: str, *, unusable: bool) -> None:
        super().__init__(message)
        self.command = command
        self.key = key
        self.unusable = unusable
