"""The layout rules of docs/architecture.md, checked: the import contracts
(import-linter, in pyproject.toml), no import of another package's private
names, a board package without host-only modules, and ruff's lint and format."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = {  # top-level package -> its folder
    "liftcard_protocol": REPO / "gateway" / "liftcard_protocol",
    "liftcard_gateway": REPO / "gateway" / "liftcard_gateway",
    "liftcard_provisioning": REPO / "provisioning" / "liftcard_provisioning",
    "liftcard_tools": REPO / "tools" / "liftcard_tools",
    "liftcard_testing": REPO / "tools" / "liftcard_testing",
}


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: scripts/setup.sh installs the test extras")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    res = _run(_tool("lint-imports"), "--no-cache")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "broken" not in res.stdout.split("Contracts:")[-1].lower().replace("0 broken", "")


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def test_no_package_imports_another_packages_private_names():
    bad = []
    for pkg, root in PACKAGE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            for line, module, name in _imports(path):
                top = module.split(".")[0]
                if top in PACKAGE_ROOTS and top != pkg and name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {module}.{name}")
    assert not bad, "\n".join(bad)


def test_the_board_package_holds_no_host_only_module():
    host = {p.stem for p in (REPO / "firmware" / "host").glob("*.py")}
    assert host, "firmware/host/ is where the host board and the flash emulator live"
    bad = []
    for path in sorted((REPO / "firmware" / "liftcard").rglob("*.py")):
        assert path.stem not in host, f"{path.relative_to(REPO)} shadows a host module"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in host]
    assert not bad, "\n".join(bad)


def test_ruff_lint_is_clean():
    res = _run(_tool("ruff"), "check", "--no-cache", ".")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_ruff_format_is_clean():
    res = _run(_tool("ruff"), "format", "--no-cache", "--check", ".")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
