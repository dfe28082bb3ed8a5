"""The agent's answers to `start`, `stop` and `ping`, one command at a time, in order."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from redis.backoff import EqualJitterBackoff
from redis.exceptions import ResponseError

from perseus_core.plumbing.processes import gone_from_here
from perseus_core.plumbing.tasks import wait_event
from perseus_core.runtime.context import AgentContext
from perseus_core.runtime.slot import Reply, Slot
from perseus_core.store.control.server import HandlerResult
from perseus_core.store.wanted import may_start_on_its_own
from perseus_core.wire import keys
from perseus_core.wire.errors import CommandRejected, PayloadError
from perseus_core.wire.models import Command, CommandType, InstanceStatus, ReplyStatus
from perseus_core.wire.text import clean

log = logging.getLogger(__name__)

AUTOSTART_MAX_DELAY_S = 30.0
"""Longest wait between two autostart attempts."""


class Commands:
    """Turns operators' commands into actions on the slot (the command server's handler)."""

    def __init__(self, ctx: AgentContext, slot: Slot) -> None:
        self._ctx = ctx
        self._slot = slot
        self._operator_acted = False

    async def should_serve(self, command: Command) -> bool:
        """Leave a command to the agent that holds the slot, when another one does.

        Two agents may watch the same exchange (a standby on another host).
        Whichever reads a command first would run it; the holder is the one
        that can answer `stop` or `ping` truthfully, so an idle agent steps
        aside while the status key names a Perseus holder other than itself.
        """
        if self._slot.run is not None:
            return True
        holder = await self._holder()
        if holder is None or holder.instance_id is None:  # none, unreadable, or not ours
            return True
        if holder.hostname == self._ctx.hostname and holder.pid == os.getpid():
            return True  # a key of ours that outlived its run (release did not reach Redis)
        log.debug(
            "%s: leaving %s %s to the holder %s",
            self._ctx.name,
            command.type,
            command.correlation_id,
            holder.instance_id,
        )
        return False

    async def handle(self, command: Command) -> HandlerResult:
        """Command server handler: run the command, log what came of it."""
        name = self._ctx.name
        operator = command.operator or "unknown operator"
        log.info(
            "%s: command %s from %s (%s)",
            name,
            command.type,
            clean(operator, 100),
            command.correlation_id,
        )
        if command.type != CommandType.PING:
            self._operator_acted = True  # an operator's word ends autostart retries
        try:
            status, message, data = await self.run(command.type, operator)
        except CommandRejected as exc:
            log.warning("%s: %s rejected: %s", name, command.type, exc)
            raise
        log.log(
            logging.INFO if status is ReplyStatus.SUCCESS else logging.WARNING,
            "%s: %s -> %s: %s",
            name,
            command.type,
            status.value,
            message,
        )
        return status, message, data

    async def run(self, kind: str, origin: str) -> Reply:
        """Run one command; `origin` (the operator, or `autostart`) goes to the log.

        Raises:
            CommandRejected: unknown command, or one the slot's state forbids.
        """
        other = await self._other_writer() if kind in (CommandType.PING, CommandType.STOP) else None
        if kind == CommandType.PING:
            if other is not None:
                return self._slot.reply(
                    ReplyStatus.SUCCESS, f"slot held by {other} (not a Perseus agent)"
                )
            return self._slot.reply(
                ReplyStatus.SUCCESS, f"{self._ctx.name} is {self._slot.state.value}"
            )
        if kind == CommandType.START:
            return await self._slot.start(origin)
        if kind == CommandType.STOP:
            if other is not None:
                raise CommandRejected(
                    f"cannot stop {self._ctx.name}: its slot is held by {other} "
                    "(not a Perseus agent), which this agent cannot stop"
                )
            return await self._slot.stop()
        raise CommandRejected(f"unknown command {clean(kind, 64)!r} (expected start, stop or ping)")

    async def _other_writer(self) -> str | None:
        """The host of a holder that is not a Perseus agent (no `instanceId`),
        while this agent runs nothing: an idle agent answers only for its own
        state, never for a run it does not own."""
        if self._slot.run is not None:
            return None
        holder = await self._holder()
        if holder is None or holder.instance_id is not None:
            return None
        return clean(holder.hostname, 128) or "an unnamed host"

    async def _holder(self) -> InstanceStatus | None:
        """The status key's holder, or None when there is none or it cannot be
        read: a payload that does not parse, or a key Redis refuses to read as
        a string (the wrong type, an ACL), reported here and then treated as
        no holder, as the claim will find out for itself."""
        key = keys.status_key(self._ctx.options.exchange_id)
        try:
            raw = await self._ctx.redis.get(key)
        except ResponseError as exc:
            log.warning("%s: cannot read %s: %s", self._ctx.name, key, clean(str(exc), 200))
            return None
        if raw is None:
            return None
        try:
            return InstanceStatus.from_json(raw)
        except PayloadError:
            return None

    async def autostart(self, stopping: asyncio.Event, note: Callable[[str | None], None]) -> None:
        """`--autostart`: a start as soon as the agent listens, unless an
        operator stopped the exchange, and never over another holder.

        Before each attempt the agent asks what the operators want
        (`store.wanted`): while the exchange is stopped it does not start it,
        and says so in its presence (`not starting: stopped by root@vm 3m ago`)
        until a `start` lifts the stop, on whichever host it was sent. While
        another instance holds the slot it waits as a standby (`standby: held
        by vm pid 28770`), reading the holder every heartbeat interval, and
        claims the slot once it is free. A start refused anyway (Redis down,
        a claim lost to another agent) is retried with backoff, each refusal
        shown through `note`, so the agent never sits READY in silence. Ends
        on success, on shutdown, or once an operator sends this agent a start
        or stop (their word wins).
        """
        ctx = self._ctx
        backoff = EqualJitterBackoff(cap=AUTOSTART_MAX_DELAY_S, base=1.0)
        poll_s = ctx.settings.heartbeat_interval_ms / 1000
        failures = 0
        told: str | None = None  # what the log last said of a wait, said once
        while not self._operator_acted:
            waiting = await self._why_not_start()
            if waiting is not None:
                note(waiting)
                kind = waiting.split(":", 1)[0]
                if kind != told:
                    told = kind
                    log.warning("%s: %s", ctx.name, waiting)
                if await wait_event(stopping, poll_s):
                    break
                continue
            if told is not None:
                log.info("%s: autostart: starting now", ctx.name)
                told = None
            try:
                status, message, _ = await self.run(CommandType.START, "autostart")
            except CommandRejected as exc:  # a command got there first, or shutting down
                log.warning("%s: autostart not run: %s", ctx.name, exc)
                break
            if status is not ReplyStatus.ERROR or self._operator_acted:
                break
            if self._slot.last_start_claimed:
                break  # the run failed after its claim: the restart policy's to handle
            delay = backoff.compute(failures)
            failures += 1
            refused = clean(message, 200)
            note(f"autostart refused ({refused}); retry {failures} in {delay:.0f}s")
            log.error("%s: autostart failed: %s; retrying in %.1fs", ctx.name, message, delay)
            if await wait_event(stopping, delay):
                break
        note(None)

    async def _why_not_start(self) -> str | None:
        """Why an autostart must wait now, in one line for the agent's note:
        an operator stopped the exchange, or another instance holds its slot
        (this agent is its standby); None when it may start."""
        ctx = self._ctx
        stopped = await may_start_on_its_own(ctx.redis, ctx.options.exchange_id)
        if stopped is not None:
            return f"not starting: {stopped.describe(ctx.clock())}"
        return await self.standby(", starting it once the slot is free")

    async def standby(self, then: str = "") -> str | None:
        """`standby: coinbase is held by vm pid 28770` when another instance
        holds the slot (this agent, idle, is its standby), else None.

        Args:
            then: what the agent will do about it, appended to the line.
        """
        holder = await self._holder()
        if holder is None:
            return None
        if holder.hostname == self._ctx.hostname and holder.pid == os.getpid():
            return None  # a key of ours that outlived its run: the claim sorts it out
        if holder.instance_id is not None and gone_from_here(holder.pid_scope, holder.pid):
            return None  # its process is proven gone: the claim takes the slot over
        host = clean(holder.hostname, 128) or "an unnamed host"
        pid = f" pid {holder.pid}" if holder.pid is not None else ""
        return f"standby: {self._ctx.name} is held by {host}{pid}{then}"
