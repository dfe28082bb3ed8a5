"""Presentation: how an exchange looks, decided once for every surface.

The dashboard's cards, table and detail screen and the CLI's `status` all ask
this layer what to call an exchange (live, unreadable, ready, offline), which
badge and words to show and in which tone. Tones are semantic (success,
warning, error...): the dashboard maps them to theme variables, the CLI to
terminal styles, so the two can never disagree about what a colour means.
No UI toolkit is imported here.

- `exchange`: how one exchange looks (kind, badge, heartbeat judged by its
  holder's own timing, last seen).
- `commands`: whether a start or stop can succeed, judged from a view.
- `edges`: whether a vanished status key was lost or released, or is back.
- `writers`: whether an error entry is the holder's or another writer's
  (a refused claimant, a fenced agent).
- `entries`: how an activity entry's words read (an error's state named
  once).
- `fleet`: the `perseus status --json` shape of an exchange.
"""

from perseus_core.present.commands import refusal, route_of
from perseus_core.present.edges import (
    RELEASED_STATES,
    Edge,
    EdgeKind,
    KnownState,
    newer_state,
    offline_edge,
)
from perseus_core.present.entries import error_state, holder_text, restart_text
from perseus_core.present.exchange import (
    HEARTBEAT_LEGEND,
    LEGEND,
    Badge,
    Heartbeat,
    HeartbeatThresholds,
    StatusLine,
    Timing,
    TimingSource,
    Tone,
    badge,
    heartbeat,
    heartbeat_age_s,
    last_seen_text,
    skew_warning,
    state_tone,
    status_line,
    status_word,
    uptime_s,
)
from perseus_core.present.fleet import exchange_json
from perseus_core.present.writers import OtherWriter, other_writer

__all__ = [
    "HEARTBEAT_LEGEND",
    "LEGEND",
    "RELEASED_STATES",
    "Badge",
    "Edge",
    "EdgeKind",
    "Heartbeat",
    "HeartbeatThresholds",
    "StatusLine",
    "KnownState",
    "OtherWriter",
    "Timing",
    "TimingSource",
    "Tone",
    "badge",
    "error_state",
    "holder_text",
    "restart_text",
    "exchange_json",
    "heartbeat",
    "heartbeat_age_s",
    "last_seen_text",
    "newer_state",
    "offline_edge",
    "other_writer",
    "refusal",
    "route_of",
    "skew_warning",
    "state_tone",
    "status_line",
    "status_word",
    "uptime_s",
]
