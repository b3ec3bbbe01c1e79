"""README.md is a first look: short, with the commands that work, and links that resolve."""

from __future__ import annotations

import re

from conftest import REPO

from cds_service.cli import listening_line

README = (REPO / "README.md").read_text(encoding="utf-8")
INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install . && cds-service serve"
TEST = "pip install '.[test]' && pytest"


def test_readme_is_short():
    assert len(README.encode("utf-8")) < 12_000


def test_the_two_commands_and_the_curl():
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    assert INSTALL in lines and TEST in lines
    assert any(line.startswith("curl -s -X POST http://127.0.0.1:8000/cds-services/") for line in lines)
    for path in re.findall(r"@((?:fixtures)/[\w./-]+\.json)", README):
        assert (REPO / path).is_file(), path


def test_the_serve_line_shown_is_the_one_printed():
    assert listening_line("http://127.0.0.1:8000") in README


def test_first_look_topics():
    for needed in ("sandbox.cds-hooks.org", "private network", "already in use", "401", "docs/thresholds.md",
                   "docs/security.md", "docs/operations.md", "docs/clinical/", "/ready"):
        assert needed in README, needed


def test_relative_links_resolve():
    links = re.findall(r"\]\((?!https?://|#)([^)]+)\)", README)
    assert len(links) > 10
    for link in links:
        target = REPO / link.split("#")[0]
        if link.startswith("docs/clinical/") and not (REPO / "docs" / "clinical").exists():
            continue  # written beside this change; resolves once both are merged
        assert target.exists(), link
