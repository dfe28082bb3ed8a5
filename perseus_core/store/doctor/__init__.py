"""`perseus doctor`'s checks: a Redis target as Perseus will use it.

`diagnose` runs every check and returns a `Diagnosis`; `probe_roles` says
what the connected user may do in each Perseus role, and `command_refusal`
only whether it may send commands (the dashboard asks it to start read-only
for a viewer). Rights are asked of Redis without running anything
(`rights`).
"""

from perseus_core.store.doctor.checks import Check, Diagnosis, diagnose
from perseus_core.store.doctor.rights import Method
from perseus_core.store.doctor.roles import (
    Role,
    RoleResult,
    Roles,
    Target,
    command_refusal,
    find_target,
    probe_roles,
)

__all__ = [
    "Check",
    "Diagnosis",
    "Method",
    "Role",
    "RoleResult",
    "Roles",
    "Target",
    "command_refusal",
    "diagnose",
    "find_target",
    "probe_roles",
]
