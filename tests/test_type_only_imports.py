"""Imports under `if TYPE_CHECKING:` obey the layers too (ADR 0039).

import-linter runs with `exclude_type_checking_imports = true`, so an annotation may name another app's model
without importing it at run time (the "never import each other's models" contracts see run-time imports only).
The price is that the layers contract does not see type-only imports either; this test holds them to the same
order as `pyproject.toml`: an app may name, for its type checker, only itself or an app below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

APPS = Path(__file__).resolve().parent.parent / "apps"

# Top to bottom, as the "layers" contract in pyproject.toml; apps on one line are independent of each other.
LAYERS = [
    {"demo"},
    {"ops"},
    {"reconciliation"},
    {"endorsements"},
    {"ledger", "loan_applications"},
    {"employers"},
    {"insurers"},
    {"partners"},
    {"outbox"},
    {"audit"},
    {"common"},
]
RANK = {app: rank for rank, apps in enumerate(LAYERS) for app in apps}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def type_only_imports(source: str) -> list[tuple[int, str]]:
    """`(line, module)` of every `from apps.… import` / `import apps.…` inside an `if TYPE_CHECKING:` block."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for inner in (n for stmt in node.body for n in ast.walk(stmt)):
            if isinstance(inner, ast.ImportFrom) and inner.module and inner.module.startswith("apps."):
                found.append((inner.lineno, inner.module))
            elif isinstance(inner, ast.Import):
                found += [(inner.lineno, a.name) for a in inner.names if a.name.startswith("apps.")]
    return found


def upward(importer: str, imported: str) -> bool:
    """Whether an import from app `importer` of app `imported` breaks the layers."""
    if importer == imported:
        return False
    return RANK[imported] <= RANK[importer]


def test_type_only_imports_point_down_the_layers():
    broken = []
    for path in sorted(APPS.rglob("*.py")):
        parts = path.relative_to(APPS).parts
        if "tests" in parts or "migrations" in parts or len(parts) < 2:
            continue
        for line, module in type_only_imports(path.read_text(encoding="utf-8")):
            if upward(parts[0], module.split(".")[1]):
                broken.append(f"{path}:{line} {module}")

    assert broken == []


def test_the_scan_sees_type_only_imports_and_judges_them_by_layer():
    source = "if TYPE_CHECKING:\n    from apps.endorsements.models import Endorsement\n"

    assert type_only_imports(source) == [(2, "apps.endorsements.models")]
    assert upward("employers", "endorsements") is True
    assert upward("ledger", "loan_applications") is True
    assert upward("endorsements", "employers") is False
    assert upward("insurers", "insurers") is False
