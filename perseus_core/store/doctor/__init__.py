"""`perseus doctor`'s checks: a Redis target as Perseus will use it.

`diagnose` runs every check and returns a `Diagnosis`; `probe_roles` alone
says which Perseus roles the connected user can act as (the dashboard uses
it to start read-only for a viewer).
"""

from perseus_core.store.doctor.checks import Check, Diagnosis, diagnose
from perseus_core.store.doctor.roles import Roles, probe_roles

__all__ = ["Check", "Diagnosis", "Roles", "diagnose", "probe_roles"]
