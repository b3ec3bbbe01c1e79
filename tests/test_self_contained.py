"""The repository stands alone: no test, script or package module reads or cites anything beside it."""

from __future__ import annotations

import re

from conftest import REPO

OUTSIDE = re.compile(r"/work/|\.\./shared|REPO\.parent\b|parents\[[2-9]\]|Path\.home\(\)")


def test_no_test_script_or_module_reaches_outside_the_repository():
    offenders = []
    for folder in ("tests", "scripts", "cds_service", "bench", ".ci"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix not in (".py", "") or not path.is_file() or "__pycache__" in path.parts:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if OUTSIDE.search(line) and path.name != "test_self_contained.py":
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert offenders == []


def test_test_data_is_inside_the_repository():
    from conftest import CLIENT_EXAMPLES, SYNTHEA

    for folder in (CLIENT_EXAMPLES, SYNTHEA):
        assert folder.resolve().is_relative_to(REPO.resolve()) and any(folder.glob("*.json"))
