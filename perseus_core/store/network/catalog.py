"""The catalog (docs/wire-format.md 2.1): validating what is read, and editing it.

Everything read from Redis is untrusted: a corrupt catalog value becomes a
message on its own exchange's view, never an exception, so one bad writer
cannot blank the whole dashboard.

Catalog values are validated once per distinct value: a reader keeps what
the latest read parsed, keyed by the exact bytes, so an unchanged catalog
value is the very same object from one snapshot to the next (which is how
the fleet reader tells an unchanged exchange from a changed one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import refused
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.network.views import NOT_AN_ID
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import (
    MAX_PAYLOAD_BYTES,
    CatalogEntry,
    shared_json_validator,
    validate_exchange_name,
)

log = logging.getLogger(__name__)

Token = CatalogEntry | str
"""A parsed catalog value: the valid entry, or what is wrong with it."""

_Model = TypeVar("_Model", bound=BaseModel)

validate_catalog_json = shared_json_validator(CatalogEntry)
"""A catalog value straight into `CatalogEntry`: the fast path."""


def parse_untrusted(
    raw: str, validate: Callable[[str], Any], from_json: Callable[[str], _Model]
) -> _Model | str:
    """A payload validated, or the message of the `PayloadError` its model's
    `from_json` raises for it.

    Valid payloads go through pydantic-core's JSON parser straight into the
    model (`validate`: about twice as fast as `json.loads` plus
    `model_validate`, which matters at 10,000 payloads per poll); both paths
    are strict, ignore unknown fields and accept the same payloads, and
    anything the fast path rejects is handed to `from_json` so the reported
    error is exactly its.
    """
    if len(raw) <= MAX_PAYLOAD_BYTES:
        try:
            return cast(_Model, validate(raw))
        except ValidationError:
            pass
    try:
        return from_json(raw)
    except PayloadError as exc:
        return str(exc)


def parse_catalog_payload(raw: str) -> CatalogEntry | str:
    """A catalog value validated, or the `CatalogEntry.from_json` error message."""
    return parse_untrusted(raw, validate_catalog_json, CatalogEntry.from_json)


def field_id(field_name: str) -> int:
    """The exchange id a catalog field names, or `NOT_AN_ID`."""
    # isdecimal, not isdigit: int() rejects digits such as superscripts.
    if field_name.isdecimal() and len(field_name) <= 18:
        return int(field_name)
    return NOT_AN_ID


def not_an_id(field_name: str) -> str:
    """What is wrong with a catalog field that names no exchange id."""
    return f"catalog field {field_name[:40]!r} is not an exchange id"


def catalog_problem(exchange_id: int, token: Token) -> str | None:
    """What is wrong with a parsed catalog value stored under `exchange_id`."""
    if isinstance(token, str):
        return token
    if token.id != exchange_id:
        return f"catalog entry under id {exchange_id} says id {token.id}"
    return None


def catalog_unreadable(error: Exception) -> str:
    """What is wrong with a catalog key Redis refuses to read as a hash."""
    return f"catalog {keys.CATALOG_KEY} is unreadable (it must be a hash): {error}"


class CatalogParser:
    """Parses catalog reads, reusing what the latest read parsed, and keeps
    what was wrong with each corrupt field at that read.

    Attributes:
        errors: field -> message for every corrupt field at the latest read;
            a new or changed message is logged once, as a warning.
        unreadable: what Redis said when it refused to read the whole
            catalog at the latest read; None when it was read.
    """

    def __init__(self) -> None:
        """Start with nothing parsed."""
        self._cache: dict[str, Token] = {}
        self.errors: dict[str, str] = {}
        self.unreadable: str | None = None

    def readable(self, read: dict[str, str] | ResponseError) -> dict[str, str]:
        """The catalog's fields, or none when Redis refused to read it.

        A refusal (a key of the wrong type, an ACL) is kept in `unreadable`
        and logged once per distinct message: readers go on without the
        catalog (online exchanges are still found by their status keys)
        instead of failing as a whole.
        """
        if not isinstance(read, ResponseError):
            self.unreadable = None
            return read
        message = catalog_unreadable(read)
        if message != self.unreadable:
            log.warning("%s", message)
        self.unreadable = message
        return {}

    def tokens(self, values: Iterable[str], tokens: dict[str, Token]) -> dict[str, Token]:
        """Add every distinct catalog value to `tokens`, parsed, and return it.

        A value the latest read saw keeps its parsed object. The loop is the
        fast path of `parse_catalog_payload` written inline: on a first
        snapshot it runs 10,000 times.
        """
        previous = self._cache
        validate = validate_catalog_json
        limit = MAX_PAYLOAD_BYTES
        for value in values:
            if value in tokens:
                continue
            token = previous.get(value)
            if token is None and len(value) <= limit:
                try:
                    token = validate(value)
                except ValidationError:
                    pass
            tokens[value] = token if token is not None else parse_catalog_payload(value)
        return tokens

    def remember(self, tokens: dict[str, Token], errors: dict[str, str]) -> None:
        """Keep one read's parsed values for the next, and report its errors."""
        self._cache = tokens
        for field_name, message in errors.items():
            if self.errors.get(field_name) != message:
                log.warning("catalog field %r: %s", field_name[:40], message)
        self.errors = errors

    def entries(self, raw: dict[str, str]) -> list[CatalogEntry]:
        """The valid entries of a catalog read (in hash order); what is wrong
        with the others goes to `errors`."""
        tokens = self.tokens(raw.values(), {})
        entries: list[CatalogEntry] = []
        errors: dict[str, str] = {}
        for field_name, value in raw.items():
            exchange_id = field_id(field_name)
            if exchange_id == NOT_AN_ID:
                errors[field_name] = not_an_id(field_name)
                continue
            token = tokens[value]
            problem = catalog_problem(exchange_id, token)
            if problem is not None:
                errors[field_name] = problem
            elif isinstance(token, CatalogEntry):
                entries.append(token)
        self.remember(tokens, errors)
        return entries


async def add_missing(redis: RedisClient, entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """Write each entry unless its id has one already (HSETNX: an entry written
    meanwhile by an operator or agent is kept); the entries written."""
    if not entries:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            pipe.hsetnx(keys.CATALOG_KEY, str(entry.id), entry.to_json())
        added = await pipe.execute(raise_on_error=False)
    for result in added:
        if isinstance(result, ResponseError):
            raise refused(result, "HSETNX", keys.CATALOG_KEY)
    return [entry for entry, ok in zip(entries, added, strict=True) if ok is True or ok == 1]


async def write_entry(redis: RedisClient, entry: CatalogEntry, *, overwrite: bool = True) -> bool:
    """Write one catalog entry (see `FleetReader.add_to_catalog`).

    Raises:
        RedisRefused, AccessDenied: Redis refused the write (a catalog of the
            wrong type, out of memory, no right), naming command and key.
    """
    validate_exchange_name(entry.name)
    field_name = str(entry.id)
    command = "HSET" if overwrite else "HSETNX"
    try:
        if overwrite:
            await redis.hset(keys.CATALOG_KEY, field_name, entry.to_json())
            return True
        return bool(await redis.hsetnx(keys.CATALOG_KEY, field_name, entry.to_json()))
    except ResponseError as exc:
        raise refused(exc, command, keys.CATALOG_KEY) from exc


async def delete_entry(redis: RedisClient, exchange_id: int) -> bool:
    """Delete one catalog entry; True if there was one. Raises as `write_entry`."""
    try:
        return bool(await redis.hdel(keys.CATALOG_KEY, str(exchange_id)))
    except ResponseError as exc:
        raise refused(exc, "HDEL", keys.CATALOG_KEY) from exc
