"""The control channel: operators send commands, one server per exchange runs them.

`sender` (the client: routing, sending, waiting), `server` (the agent's
command server), `livermore` (the bridge to Livermore's channel), `records`
(what both sides share, and the transport) and `scripts` (their Lua).
"""
