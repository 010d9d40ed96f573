"""What import-linter cannot see (ADR 0039): the names apps write, and `apps.get_model` reaching across layers.

1. Every outbox topic and audit action written in production code is a member of its app's `contracts.py`
   (a name, never a string literal), and an audit action is never an f-string — so `grep` finds every writer.
2. `partners` never reaches into a higher app through `apps.get_model` (import-linter checks imports only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parent.parent / "apps"

# Apps not yet held to the rule (none: endorsements and ledger joined once their services packages named their
# topics and actions in their contracts.py, issue 9).
NOT_YET: tuple[str, ...] = ()

AUDIT_WRITERS = {"audit_record", "AuditEntry", "pii_access_record", "pii_access_record_many"}
TOPIC_WRITERS = {"outbox_enqueue", "outbox_enqueue_loan", "consumer"}


def production_modules() -> list[Path]:
    return sorted(
        path
        for path in APPS.rglob("*.py")
        if "tests" not in path.parts
        and "migrations" not in path.parts
        and path.relative_to(APPS).parts[0] not in NOT_YET
    )


def _name_of(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _spelled_out(node: ast.expr) -> bool:
    """A string literal or an f-string: a name nobody can grep for through its constant."""
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def names_spelled_out(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = _name_of(node.func)
        if name in AUDIT_WRITERS:
            values = [k.value for k in node.keywords if k.arg == "action"]
        elif name in TOPIC_WRITERS:
            values = [k.value for k in node.keywords if k.arg == "topic"] + node.args[:1]
        else:
            continue
        found += [f"{path}:{node.lineno} {name}" for v in values if _spelled_out(v)]
    return found


def test_topics_and_audit_actions_are_contract_members_not_strings():
    spelled = [hit for path in production_modules() for hit in names_spelled_out(path)]

    assert spelled == []


@pytest.mark.parametrize(
    "source",
    [
        'audit_record(action=f"x.{y}")',
        'AuditEntry(action="x.y")',
        'outbox_enqueue(topic="a.b")',
        '@consumer("a.b", queue="q")\ndef f(m): ...',
    ],
)
def test_the_scan_sees_literals_and_f_strings(tmp_path, source):
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")

    assert len(names_spelled_out(path)) == 1
    path.write_text(source.replace('f"x.{y}"', "Action.X").replace('"x.y"', "Action.X").replace('"a.b"', "Topic.A"))
    assert names_spelled_out(path) == []


def test_partners_does_not_reach_into_other_apps_through_get_model():
    partners = [p for p in (APPS / "partners").rglob("*.py") if "tests" not in p.parts and "migrations" not in p.parts]

    assert [str(p) for p in partners if "get_model(" in p.read_text(encoding="utf-8")] == []


# STYLE / issue 9: "no function over ~60 lines without a reason written next to it". The reason is the comment
# block directly above the `def` (or above its decorators), opening with `# long:`.
LONG_FUNCTION_LINES = 60


def long_functions_without_reason(path: Path, root: Path = APPS.parent) -> list[str]:
    """`path:function (n lines)` for every function in `path` longer than `LONG_FUNCTION_LINES` whose `def` (or
    first decorator) is not directly preceded by a `# long:` comment."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= LONG_FUNCTION_LINES:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1  # 0-based
        start = first
        while start > 0 and lines[start - 1].strip().startswith("#"):
            start -= 1
        reason = " ".join(line.strip().lstrip("#").strip() for line in lines[start:first])
        if not reason.startswith("long:") or len(reason) < len("long: ") + 10:
            found.append(f"{path.relative_to(root)}:{node.name} ({length} lines)")
    return found


def test_long_functions_carry_a_reason():
    offenders = [entry for path in production_modules() for entry in long_functions_without_reason(path)]
    assert offenders == []


def test_the_long_function_scan_sees_a_long_function_and_its_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LONG_FUNCTION_LINES))
    bare, reasoned, short_reason = tmp_path / "bare.py", tmp_path / "reasoned.py", tmp_path / "short.py"
    bare.write_text(f"import functools\n\n\n@functools.cache\ndef f():\n{body}\n")
    reasoned.write_text(
        f"import functools\n\n\n# long: one table of values, read top to bottom\n@functools.cache\ndef g():\n{body}\n"
    )
    short_reason.write_text(f"# long: x\ndef h():\n{body}\n")
    assert long_functions_without_reason(bare, tmp_path) == [f"bare.py:f ({LONG_FUNCTION_LINES + 1} lines)"]
    assert long_functions_without_reason(reasoned, tmp_path) == []
    assert long_functions_without_reason(short_reason, tmp_path) == [f"short.py:h ({LONG_FUNCTION_LINES + 1} lines)"]
