"""A Python stand-in for the TypeScript (Livermore) server: its Redis writes,
command for command and byte for byte as docs/wire-format.md ("Sharing Redis
with Livermore") documents them, and a responder on its pub/sub channel."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
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


Answer = Callable[[dict[str, Any]], tuple[str, str, dict[str, Any] | None]]


def default_answer(command: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    if command["type"] == "start":
        return "success", "started", {"status": "started"}
    if command["type"] == "stop":
        return "success", "stopped", None
    return "error", f"unknown command type {command['type']}", None


class LivermoreResponder:
    """Subscribed to `livermore:commands:{sub}`: answers `ack`, then the answer's
    `success` or `error` on `livermore:responses:{sub}`; records each command."""

    def __init__(self, url: str, sub: str, answer: Answer = default_answer) -> None:
        self.url, self.sub, self.answer = url, sub, answer
        self.received: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LivermoreResponder:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _serve(self) -> None:
        with sync_redis.Redis.from_url(self.url, decode_responses=True) as r:
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
                status, text, data = self.answer(command)
                self._respond(r, command, status, text, data)
            pubsub.close()

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
