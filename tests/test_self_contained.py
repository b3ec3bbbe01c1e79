"""The repository stands alone: no test, script or package module reads anything beside it.

(Citations of outside files and absolute paths are checked by tests/test_references.py; this checks the
code that would open them: paths built from the repository's parent or the home directory.)"""

from __future__ import annotations

import re

from conftest import REPO

OUTSIDE = re.compile(r"REPO\.parent\b|Path\.home\(\)|expanduser\(")
PARENTS = re.compile(r"__file__\)?(?:\.resolve\(\))?\.parents\[(\d+)\]")


def test_no_test_script_or_module_reaches_outside_the_repository():
    offenders = []
    root = REPO.resolve()
    for folder in ("tests", "scripts", "cds_service", "bench", "fixtures", ".ci"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if "__pycache__" in path.parts or path.name == "test_self_contained.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                where = f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}"
                if OUTSIDE.search(line):
                    offenders.append(where)
                for level in PARENTS.findall(line):  # Path(__file__).resolve().parents[N] must stay inside
                    if not path.resolve().parents[int(level)].is_relative_to(root):
                        offenders.append(where)
    assert offenders == []


def test_test_data_is_inside_the_repository():
    from conftest import CLIENT_EXAMPLES, SYNTHEA

    for folder in (CLIENT_EXAMPLES, SYNTHEA):
        assert folder.resolve().is_relative_to(REPO.resolve()) and any(folder.glob("*.json"))
