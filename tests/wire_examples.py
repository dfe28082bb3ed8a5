"""The examples of docs/wire-format.md section 3, exactly as the TypeScript writer
produces them: a status payload (without countryCode) and the two stream
entries, their fields in the writer's order."""

from __future__ import annotations

WIRE_STATUS = (
    '{"exchangeId":1,"exchangeName":"coinbase","hostname":"DESKTOP-ABC",'
    '"ipAddress":"203.0.113.7","adminEmail":"ops@example.com","adminDisplayName":"Ops Team",'
    '"connectionState":"active","symbolCount":25,"connectedAt":"2026-02-10T18:22:04.511Z",'
    '"lastHeartbeat":"2026-02-10T22:45:00.123Z","lastStateChange":"2026-02-10T18:22:04.511Z",'
    '"registeredAt":"2026-02-10T18:21:58.002Z","lastError":null,"lastErrorAt":null}'
)
WIRE_TRANSITION = {
    "event": "state_transition",
    "timestamp": "2026-02-10T18:22:04.511Z",
    "fromState": "warming",
    "toState": "active",
    "exchangeId": "1",
    "exchangeName": "coinbase",
    "hostname": "DESKTOP-ABC",
    "ip": "203.0.113.7",
    "adminEmail": "ops@example.com",
}
WIRE_ERROR = {
    "event": "error",
    "timestamp": "2026-02-10T19:03:11.870Z",
    "error": "websocket closed (1006)",
    "exchangeId": "1",
    "exchangeName": "coinbase",
    "hostname": "DESKTOP-ABC",
    "ip": "",
    "state": "active",
}
