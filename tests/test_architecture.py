"""The import contracts of ``[tool.importlinter]`` in pyproject.toml hold (see docs/architecture.md):
domain packages import neither face, the API and the pages do not import each other, the plugin SDK
imports nothing of the host, ``app.db`` imports no domain, the packages are layered and no import cycle
exists between the packages of ``app``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _contract(name_start: str) -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(name_start))


def _top_level_modules() -> set[str]:
    app = ROOT / "app"
    modules = {f"app.{p.stem}" for p in app.glob("*.py") if p.stem != "__init__"}
    return modules | {f"app.{p.parent.name}" for p in app.glob("*/__init__.py")}


def test_the_plugin_sdk_contract_names_every_other_module_of_app() -> None:
    """import-linter forbids by name: a new module of app must join the list, or the SDK could import it."""
    forbidden = set(_contract("The plugin SDK")["forbidden_modules"])  # type: ignore[arg-type]
    assert forbidden == _top_level_modules() - {"app.plugins"}


def test_every_module_of_app_has_a_layer() -> None:
    layers = _contract("The packages of app are layered")["layers"]
    placed = {m.strip() for layer in layers for m in layer.split("|")}  # type: ignore[attr-defined]
    assert placed == _top_level_modules()
