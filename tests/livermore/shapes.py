"""A Python stand-in for the TypeScript (Livermore) server: its Redis writes,
command for command and byte for byte as docs/wire-format.md ("Sharing Redis
with Livermore") documents them, and its control-channel service (one exchange
at a time, a per-identity queue, replies that say what one server did)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis as sync_redis

TTL_S = 45
NINETY_DAYS_MS = 90 * 86_400_000


def iso_now() -> str:
    """`Date.toISOString()`: UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LivermoreWriter:
    """One Livermore server's registry writes for one exchange slot."""

    def __init__(
        self, r: sync_redis.Redis, exchange_id: int, name: str, hostname: str, ip: str = ""
    ) -> None:
        self.r, self.id, self.name, self.hostname, self.ip = r, exchange_id, name, hostname, ip
        self.key = f"exchange:{exchange_id}:status"
        self.state = "idle"
        now = iso_now()
        self.payload: dict[str, Any] = {
            "exchangeId": exchange_id, "exchangeName": name, "hostname": hostname,
            "ipAddress": ip or None, "adminEmail": "ops@example.com",
            "adminDisplayName": "Ops Team", "connectionState": "idle", "symbolCount": 25,
            "connectedAt": None, "lastHeartbeat": now, "lastStateChange": now,
            "registeredAt": now, "lastError": None, "lastErrorAt": None,
        }  # fmt: skip

    def _json(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"))

    def _xadd(self, stream_name: str, fields: dict[str, str]) -> None:
        cutoff = int(time.time() * 1000) - NINETY_DAYS_MS
        self.r.execute_command(
            "XADD", f"logs:network:{stream_name}", "MINID", "~", f"{cutoff}-0", "*",
            *[part for pair in fields.items() for part in pair],
        )  # fmt: skip

    def claim(self) -> bool:
        """`SET ... EX 45 NX`; a same-host holder is overwritten (`SET XX`); when
        refused, an error entry (own host, state idle) into the holder's stream."""
        if self.r.set(self.key, self._json(), ex=TTL_S, nx=True):
            return True
        holder = json.loads(self.r.get(self.key) or "{}")
        if holder.get("hostname") == self.hostname:
            return bool(self.r.set(self.key, self._json(), ex=TTL_S, xx=True))
        self._xadd(
            str(holder.get("exchangeName", self.name)).lower(),
            {
                "event": "error", "timestamp": iso_now(),
                "error": f"Exchange {self.id} is already claimed by {holder.get('hostname')}",
                "exchangeId": str(self.id), "exchangeName": self.name,
                "hostname": self.hostname, "ip": self.ip, "state": "idle",
            },
        )  # fmt: skip
        return False

    def heartbeat(self) -> None:
        """The whole payload, `SET ... EX 45 XX`; re-created with a plain `SET EX`
        when the key is missing."""
        self.payload["lastHeartbeat"] = iso_now()
        if not self.r.set(self.key, self._json(), ex=TTL_S, xx=True):
            self.r.set(self.key, self._json(), ex=TTL_S)

    def heartbeat_ago(self, seconds: float, now: datetime) -> None:
        """The heartbeat as it stands `seconds` after it was written at `now - seconds`:
        `lastHeartbeat` then, and the TTL that is left of the 45 s (`PX`), so a
        reader dating it by `PTTL` or by `lastHeartbeat` finds the same age."""
        self.payload["lastHeartbeat"] = (
            (now - timedelta(seconds=seconds))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        self.r.set(self.key, self._json(), px=int((TTL_S - seconds) * 1000))

    def transition(self, to_state: str) -> None:
        """A status update (`SET ... KEEPTTL`) and its `state_transition` entry."""
        from_state, self.state = self.state, to_state
        now = iso_now()
        self.payload.update(connectionState=to_state, lastStateChange=now)
        if to_state == "active":
            self.payload["connectedAt"] = now  # never cleared afterwards
        self.r.set(self.key, self._json(), keepttl=True)
        self._xadd(
            self.name.lower(),
            {
                "event": "state_transition", "timestamp": now, "fromState": from_state,
                "toState": to_state, "exchangeId": str(self.id), "exchangeName": self.name,
                "hostname": self.hostname, "ip": self.ip, "adminEmail": "ops@example.com",
            },
        )  # fmt: skip

    def bring_up(self) -> None:
        for state in ("starting", "warming", "active"):
            self.transition(state)

    def deregister(self) -> None:
        """Plain `DEL`."""
        self.r.delete(self.key)

    def fail_early(self, error: str) -> None:
        """A start that fails before the server knows its exchange: an `error`
        entry (its own host, state idle) into `logs:network:unknown`, with
        exchangeId 0 and the exchange name `unknown`."""
        self._xadd(
            "unknown",
            {
                "event": "error", "timestamp": iso_now(), "error": error,
                "exchangeId": "0", "exchangeName": "unknown",
                "hostname": self.hostname, "ip": self.ip, "state": "idle",
            },
        )  # fmt: skip


class LivermoreServer:
    """One Livermore server of an owner identity, as its control-channel service
    behaves (docs/wire-format.md 4.1), on a thread of its own.

    Subscribed to `livermore:commands:{sub}`, it acknowledges every command,
    `ZADD`s it into the identity's shared queue and `ZPOPMIN`s; only a server
    that pops a command runs it (so with several servers on one identity,
    usually one does). It runs at most one exchange at a time and keeps its own
    idle flag: `start` while it runs any exchange answers success with
    `already_started` (naming the requested exchange), `stop` while it believes
    it is idle answers success with `already_idle`. A real start claims the
    exchange's key and brings it up through its `LivermoreWriter`; a real stop
    takes it down and deletes the key. `autostart` brings an exchange up at
    once without clearing the idle flag, as Livermore's autostart does.
    `running` is an exchange it started through the channel before. `start_error`
    makes every start that would run fail with that message. `races` runs every
    command it receives, as a server that pops a command before another
    server's `ZADD` lands does.
    Every command it receives is recorded in `received`; every one it ran, in `ran`.
    """

    def __init__(
        self,
        url: str,
        sub: str,
        hostname: str,
        exchanges: dict[str, int],
        *,
        running: str | None = None,
        autostart: str | None = None,
        start_error: str | None = None,
        races: bool = False,
    ) -> None:
        self.url, self.sub, self.hostname, self.exchanges = url, sub, hostname, exchanges
        self.running, self.autostart, self.start_error = running, autostart, start_error
        self.races = races
        self.received: list[dict[str, Any]] = []
        self.ran: list[dict[str, Any]] = []
        self.idle = True
        self.writer: LivermoreWriter | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LivermoreServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _serve(self) -> None:
        with sync_redis.Redis.from_url(self.url, decode_responses=True) as r:
            if self.autostart is not None:
                self.writer = self._bring_up(r, self.autostart)  # the idle flag stays set
            if self.running is not None:  # started through the channel earlier
                self.writer, self.idle = self._bring_up(r, self.running), False
            pubsub = r.pubsub()
            pubsub.subscribe(f"livermore:commands:{self.sub}")
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.05)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self._ready.set()
                    continue
                command = json.loads(message["data"])
                self.received.append(command)
                self._respond(r, command, "ack", None, None)
                if self.races:  # popped before another server's ZADD landed
                    taken = command
                else:
                    queue = f"livermore:command-queue:{self.sub}"
                    r.zadd(queue, {message["data"]: command.get("priority", 50)})
                    popped = r.zpopmin(queue)
                    if not popped:
                        continue  # another server of the identity took it
                    taken = json.loads(popped[0][0])
                self.ran.append(taken)
                self._respond(r, taken, *self._run(r, taken))
            pubsub.close()

    def _bring_up(self, r: sync_redis.Redis, name: str) -> LivermoreWriter:
        writer = LivermoreWriter(r, self.exchanges[name], name, self.hostname)
        assert writer.claim(), f"{self.hostname} could not claim {name}"
        writer.bring_up()
        return writer

    def _claimed(self, r: sync_redis.Redis, name: str) -> LivermoreWriter | None:
        """A start's claim and transitions; None when another host holds the slot."""
        writer = LivermoreWriter(r, self.exchanges[name], name, self.hostname)
        if not writer.claim():
            return None
        for state in ("starting", "warming"):
            writer.transition(state)
            time.sleep(0.05)  # a real connection takes its time
        writer.transition("active")
        return writer

    def _run(
        self, r: sync_redis.Redis, command: dict[str, Any]
    ) -> tuple[str, str | None, dict[str, Any] | None]:
        if command["type"] == "start":
            name = (command.get("payload") or {}).get("exchange", "coinbase")
            if not self.idle:
                message = "Exchange connection already active"
                return "success", None, {"status": "already_started", "exchange": name,
                                         "message": message}  # fmt: skip
            if self.start_error is not None:
                return "error", self.start_error, None
            if name not in self.exchanges:
                return "error", f"exchange {name} not configured", None
            self.writer = self._claimed(r, name)
            if self.writer is None:
                return "error", f"Exchange {self.exchanges[name]} is already claimed", None
            self.idle = False
            return "success", None, {"status": "started", "exchange": name}
        if command["type"] == "stop":
            if self.idle:
                return "success", None, {"status": "already_idle",
                                         "message": "No active exchange connections"}  # fmt: skip
            assert self.writer is not None
            for state in ("stopping", "stopped"):
                self.writer.transition(state)
            self.writer.deregister()
            self.writer, self.idle = None, True
            return "success", None, {"status": "stopped"}
        return "error", f"unknown command type {command['type']}", None

    def _respond(
        self,
        r: sync_redis.Redis,
        command: dict[str, Any],
        status: str,
        message: str | None,
        data: dict[str, Any] | None,
    ) -> None:
        body: dict[str, Any] = {"correlationId": command["correlationId"], "status": status}
        if message is not None:
            body["message"] = message
        if data is not None:
            body["data"] = data
        body["timestamp"] = int(time.time() * 1000)
        r.publish(f"livermore:responses:{self.sub}", json.dumps(body))


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
