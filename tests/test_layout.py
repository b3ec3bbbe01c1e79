"""The layout reads as the data flow: the clinical engine imports nothing from the web, auth, store,
sources or audit code, and no function is too complex to review (house rule: cyclomatic complexity 25)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLINICAL = ROOT / "cds_service" / "clinical"
FORBIDDEN = ("cds_service.app", "cds_service.auth", "cds_service.store", "cds_service.sources", "cds_service.audit",
             "cds_service.metrics", "cds_service.preview", "cds_service.smart", "cds_service.timeline",
             "cds_service.evaluate", "cds_service.hooks", "fastapi", "starlette", "httpx")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (relative imports resolved against its package), with the line."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    return _imports_of(path.read_text(encoding="utf-8"), package)


def _imports_of(source: str, package: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            out += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_the_clinical_engine_imports_nothing_from_web_auth_store_sources_or_audit():
    modules = sorted(CLINICAL.rglob("*.py"))
    assert len(modules) > 20  # the walk found the package
    bad = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in modules for line, name in _imports(p) if _forbidden(name)]
    assert bad == []


def test_the_import_check_would_catch_a_forbidden_import():
    source = "from ...sources import gather\nimport httpx\nfrom ... import audit\nfrom ..terminology import GC\n"
    found = [name for _, name in _imports_of(source, "cds_service.clinical.facts") if _forbidden(name)]
    assert found == ["cds_service.sources", "cds_service.sources.gather", "httpx", "cds_service.audit"]


def _ruff() -> list[str] | None:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    return [exe] if exe else None


def test_no_function_is_above_complexity_25():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    result = subprocess.run([*ruff, "check", "--select", "C901", "--config", "lint.mccabe.max-complexity=25",
                             "--output-format", "concise", "cds_service", "bench", "scripts"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
