"""One run of the slot, from claim to release: the steps that walk it back to idle.

Each run gets a fresh `Instance` (a new holder token, a lifecycle that starts
at idle) and, when the agent was given a command line, the child it runs.
A run ends in one of three ways, each written here once: a stop (stopping,
the child stopped, stopped, idle, release), its child exiting on its own
(an error entry, back to idle through valid transitions, release) or a lost
lease (fencing: the child stopped at once, nothing more written to a key
that belongs to someone else now).

The caller (`Slot`) holds its lock around every method here, so two of them
never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from perseus_core.instance import Instance
from perseus_core.runtime.context import AgentContext
from perseus_core.runtime.output import ChildOutput
from perseus_core.runtime.supervisor import ChildProcess
from perseus_core.store.lease import LeaseLost
from perseus_core.store.network.views import CHILD_EXIT_PREFIX
from perseus_core.wire.models import ConnectionState

log = logging.getLogger(__name__)

_IDLE = ConnectionState.IDLE


class Run:
    """One claim-to-release run: its `Instance` and, once spawned, its child.

    Args:
        ctx: the agent's shared context.
        instance: the run's instance, its slot already claimed.
        changed: called after every state change (refreshes the agent's presence).
        ended: called once the run no longer holds the slot (released or fenced).
    """

    def __init__(
        self,
        ctx: AgentContext,
        instance: Instance,
        *,
        changed: Callable[[], None],
        ended: Callable[[Run], None],
    ) -> None:
        self.ctx = ctx
        self.instance = instance
        self.child: ChildProcess | None = None
        self.output: ChildOutput | None = None
        """Where the child's lines go (and its last stderr lines), once spawned."""
        self._changed = changed
        self._ended_callback = ended
        self._grace_s = ctx.settings.stop_grace_ms / 1000
        self.claimed_at = time.monotonic()
        """When the run began (its claim), for the restart policy's quick failures."""
        self.reached_active = False
        """Whether the run was ever active (a start that fails before is a quick failure)."""
        self.over = asyncio.Event()
        """Set once the run no longer holds the slot: what watches it (health) ends."""

    @property
    def state(self) -> ConnectionState:
        """The run's lifecycle state."""
        return self.instance.state

    async def transition(self, to: ConnectionState) -> None:
        """One lifecycle step, logged. Raises LeaseLost, without writing anything,
        once the run's lease is known to be lost: the caller fences instead."""
        instance = self.instance
        if instance.lease.lost is not None:
            raise instance.lease.lost
        before = instance.state
        publication = await instance.transition(to)
        if to is ConnectionState.ACTIVE:
            self.reached_active = True
        self._changed()
        log.info(
            "%s: %s -> %s%s",
            self.ctx.name,
            before.value,
            to.value,
            "" if publication.ok else " (Redis catches up when it answers again)",
        )

    async def abort_start(self, message: str) -> None:
        """A start that failed before warming: error entry, starting -> idle, release."""
        log.error("%s: %s", self.ctx.name, message)
        await self.instance.record_error(message)
        await self.transition(_IDLE)
        await self.release()

    async def stop(self) -> str:
        """stopping -> stop the child -> stopped -> idle -> release; fences on a lost lease."""
        try:
            await self.transition(ConnectionState.STOPPING)
            outcome = await self.stop_child()
            await self.transition(ConnectionState.STOPPED)
            await self.transition(_IDLE)
            await self.release()
        except LeaseLost as exc:
            return await self.fence(exc)
        return f"{self.ctx.name} stopped" + (f" (child {outcome})" if outcome else "")

    async def release(self) -> None:
        """Give the slot back and end the run. Raises LeaseLost (caller fences)."""
        instance = self.instance
        if instance.lease.lost is not None:
            raise instance.lease.lost
        await instance.release()
        self._ended()
        await instance.close()
        log.info("%s: released the slot; idle", self.ctx.name)

    async def stop_child(self) -> str | None:
        """SIGTERM every process of the child, SIGKILL after the grace; its exit, described."""
        child = self.child
        if child is None:
            return None
        self.child = None
        running = child.returncode is None
        if running:
            log.info(
                "%s: stopping child (pid %d): SIGTERM, SIGKILL after %gs",
                self.ctx.name,
                child.pid,
                self._grace_s,
            )
        await child.terminate(self._grace_s)  # also clears whatever it left running
        outcome = child.describe_exit()
        if running:
            log.info("%s: child (pid %d) %s", self.ctx.name, child.pid, outcome)
        return outcome

    def _ended(self) -> None:
        self.over.set()
        self._ended_callback(self)

    @property
    def ran_s(self) -> float:
        """Seconds since the claim."""
        return time.monotonic() - self.claimed_at

    async def child_exited(self, outcome: str) -> str:
        """The child ended on its own (`outcome` says how): record the exit, walk
        back to idle through valid transitions, release."""
        instance = self.instance
        if instance.lease.lost is not None:
            return await self.fence(instance.lease.lost)
        state = instance.state
        await self.stop_child()  # whatever it left running: helpers, a daemon (and its pipes)
        message = f"{CHILD_EXIT_PREFIX}{outcome} while {state.value}"
        last = self.output.last_stderr if self.output is not None else []
        if last:
            message += "; last stderr: " + " | ".join(last)
        await self._back_to_idle(message, state)
        return message

    async def fail(self, why: str) -> str:
        """The agent ends the run itself (not ready in time, unhealthy): the child
        stopped, an error entry saying `why`, back to idle, release."""
        instance = self.instance
        if instance.lease.lost is not None:
            return await self.fence(instance.lease.lost)
        state = instance.state
        outcome = await self.stop_child()
        message = why + (f" (child {outcome})" if outcome else "")
        log.error("%s: %s", self.ctx.name, message)
        await self._back_to_idle(message, state)
        return message

    async def _back_to_idle(self, message: str, state: ConnectionState) -> None:
        """Record `message` as an error while `state`, then the valid way back to idle."""
        instance = self.instance
        try:
            await instance.record_error(message)
            if state is ConnectionState.ACTIVE:
                await self.transition(ConnectionState.STOPPING)
                await self.transition(ConnectionState.STOPPED)
            await self.transition(_IDLE)
            await self.release()
        except LeaseLost as exc:
            await self.fence(exc)

    async def fence(self, exc: LeaseLost) -> str:
        """Stop the child at once and drop the run without touching the status key.

        The key belongs to the new holder; the instance has already recorded
        the loss (`exc`) in the activity stream. No transitions are written for
        the dropped run: in the shared stream they would read as the exchange
        stopping while the new holder runs it. One error entry says what this
        agent did about it.
        """
        state = self.instance.state
        self._ended()
        outcome = await self.stop_child()
        await self.instance.close()  # heartbeat already stopped; no write to the key
        message = f"fenced after losing the slot while {state.value}" + (
            f": child {outcome}" if outcome else ""
        )
        await self.ctx.append_error(f"{message}; this agent is idle", state)
        log.error("%s: %s; idle", self.ctx.name, message)
        return message

    async def abandon(self) -> None:
        """Leave nothing of the run behind after a bug or a cancellation half-way
        through a start: the agent is then idle (and startable), not stuck."""
        self._ended()
        await self.stop_child()
        await self.instance.close()

    async def aclose(self) -> None:
        """Last resort on the agent's exit: the child killed, the instance closed."""
        if self.child is not None:
            await self.child.aclose()
            self.child = None
        await self.instance.close()
