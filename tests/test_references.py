"""Every clinical reference resolves inside ``docs/clinical/``, and nothing cites a file outside the repository.

The citation convention (``docs/clinical/README.md``): ``decision 19`` / ``decisions 4-6`` / ``decisions 2 and
8-12`` for the product decisions; ``A7``, ``B4.3``, ``S3R``, ``REN-CKD``, ``THR-AGE``, ``IVIG-IND-SFN`` ... for
items of the research summary; ``knowledge §4.2`` for its sections. Each must match an explicit anchor
(``<a id="..."></a>``) in ``docs/clinical/*.md``.

Scanned: every tracked (or new, not ignored) text file. Left out, because they hold codes or third-party
text rather than citations: ``tests/data/`` (captured client requests, Synthea records and their provenance
notes) and ``cds_service/data/terminology.json`` (the code list, full of ICD-10 codes such as A41.9). This
file is left out too: it has to spell the forms it forbids. Inside scanned files, a token written in quotes
or backticks (``"A19"``, ```A41```) or with a decimal part (``A15.0``) is a code, not a citation.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLINICAL = REPO / "docs" / "clinical"
DECISIONS_DOC = "docs/clinical/decisions.md"
KNOWLEDGE_DOC = "docs/clinical/knowledge.md"

EXCLUDED_DIRS = ("tests/data/",)
FOREIGN_TREES = {"site-packages", "node_modules"}  # a local virtualenv or npm tree that .gitignore misses
EXCLUDED_FILES = {
    "cds_service/data/terminology.json",  # code list: ICD-10 codes like A15.0, A41.9 are data
    "tests/test_references.py",  # this checker names the forbidden forms on purpose
}
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".ico", ".pdf", ".gz", ".zip", ".whl", ".db", ".sqlite",
                   ".woff", ".woff2", ".ttf", ".pyc"}
QUOTES = "\"'`"

# ------------------------------------------------------------------------------------------ patterns
_NUMS = r"\d+(?:\s*[-–]\s*\d+)?(?:\s*(?:,|and|or|&)\s*\d+(?:\s*[-–]\s*\d+)?)*"
DECISION_RE = re.compile(r"\b[Dd]ecisions?\s+(" + _NUMS + r")")
_SECTION = r"\d+(?:\.\d+)*"
KNOWLEDGE_SECTION_RE = re.compile(
    r"\b[Kk]nowledge\s+§\s*(" + _SECTION + r")((?:\s*(?:,|and|or)\s*§\s*" + _SECTION + r")*)")
BARE_SECTION_RE = re.compile(r"§\s*(" + _SECTION + r")")
# Ambiguities A1.., building blocks B1.. (B4.3), states S0-S7 with S2b/S3R/S3I (and the S3 family).
SIMPLE_ID_RE = re.compile(r"(?<![\w./#§])(A\d{1,2}|B\d(?:\.\d+)?|S\d{1,2}(?:b|R|I)?)(?!\w|\.\d)")
# Rule ids of knowledge §3.2 and the IVIG flags of knowledge §4.2.
RULE_ID_RE = re.compile(r"(?<![\w./#-])((?:REN|THR|HF|HEMOLYSIS|AM|TRALI|PRIOR-IVIG|IGA|IVIG)-[A-Z]+(?:-[A-Z]+)*"
                        r"|HYPERVISC|IGA)(?![\w-])")

# Citations of material outside the repository, with what to write instead.
OLD_DECISIONS_RE = re.compile(r"\bDECISIONS(?:\.md)?(?:\s*§?\s*(" + _NUMS + r"))?")
OLD_KNOWLEDGE_RE = re.compile(r"\bKNOWLEDGE(?:\.md)?(?:'s)?"
                              r"(?:\s+(?:§\s*(" + _SECTION + r")|([A-Z][A-Z0-9]*(?:[.-][A-Z0-9]+)*)))?")
SHARED_RE = re.compile(r"(?<![\w.-])(?:\.\./)*shared/([\w.-]+)?[\w./-]*|(?<![\w.-])\.\./shared\b")
ABSOLUTE_WORK_RE = re.compile(r"/work/[\w./-]*")
FOREIGN_DOC_RE = re.compile(r"\b(REPORT|COSTS|NOTES|CLIENTS|SMART)\.md\b(?:\s*§\s*" + _SECTION + r")?")

PERF_ADVICE = ("state the measured figure plainly, or cite bench/README.md, bench/RESULTS.md or "
               "docs/operations.md")
SPEC_ADVICE = ("cite the CDS Hooks specification by URL (https://cds-hooks.hl7.org/2.0/), docs/security.md, "
               "or a captured request in tests/data/client-examples/")
CLINICAL_ADVICE = "cite docs/clinical/ (`decision N`, `A7`, `B4.3`, `REN-CKD`, `knowledge §4.2`)"
FOREIGN_ADVICE = {"REPORT": PERF_ADVICE, "COSTS": PERF_ADVICE, "NOTES": SPEC_ADVICE, "CLIENTS": SPEC_ADVICE,
                  "SMART": SPEC_ADVICE}
SHARED_ADVICE = {"perf": PERF_ADVICE, "spec": SPEC_ADVICE, "hooks": SPEC_ADVICE, "clinical": CLINICAL_ADVICE,
                 "synthea-r4": "use the records copied into tests/data/synthea-r4/"}


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    found: str
    advice: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.found!r}: {self.advice}"


# ------------------------------------------------------------------------------------------ anchors
ANCHOR_RE = re.compile(r"""<a\s+id=["']([^"']+)["']""")


def anchors() -> dict[str, set[str]]:
    """Anchor ids per document of docs/clinical, keyed by repository-relative path."""
    return {f"docs/clinical/{p.name}": set(ANCHOR_RE.findall(p.read_text(encoding="utf-8")))
            for p in sorted(CLINICAL.glob("*.md"))}


def item_anchor(token: str) -> str:
    """Anchor id of a knowledge item: ``B4.3`` -> ``b4-3``, ``REN-CKD`` -> ``ren-ckd``, ``S3R`` -> ``s3r``."""
    return token.lower().replace(".", "-")


def section_anchor(number: str) -> str:
    return "section-" + number.replace(".", "-")


def expand_numbers(spec: str) -> list[int]:
    """``"2, 8-12 and 19"`` -> [2, 8, 9, 10, 11, 12, 19]."""
    out: list[int] = []
    for part in re.split(r"\s*(?:,|and|or|&)\s*", spec.strip()):
        bounds = [int(x) for x in re.split(r"\s*[-–]\s*", part) if x]
        if len(bounds) == 2 and bounds[0] <= bounds[1] <= bounds[0] + 60:
            out.extend(range(bounds[0], bounds[1] + 1))
        else:
            out.extend(bounds)
    return out


# ------------------------------------------------------------------------------------------ scanning
def _quoted(line: str, start: int, end: int) -> bool:
    """A token written as a code: directly enclosed by the same quote or backtick on both sides."""
    return 0 < start and end < len(line) and line[start - 1] in QUOTES and line[end] == line[start - 1]


def _suggest_decisions(numbers: str | None) -> str:
    if not numbers:
        return "cite a decision by number (`decision 19`), defined in " + DECISIONS_DOC
    nums = re.sub(r"\s+", " ", numbers.strip())
    plural = bool(re.search(r"[-–,&]|and|or", nums))
    return f"write `{'decisions' if plural else 'decision'} {nums}` (defined in {DECISIONS_DOC})"


def _suggest_knowledge(section: str | None, item: str | None) -> str:
    if section:
        return f"write `knowledge §{section}` (defined in {KNOWLEDGE_DOC})"
    if item:
        return f"write the item id alone, `{item}` (defined in {KNOWLEDGE_DOC})"
    return "cite a section (`knowledge §4.2`) or an item id (`A7`, `B4.3`, `REN-CKD`) of " + KNOWLEDGE_DOC


def outside_references(path: str, lineno: int, line: str, tracked_names: set[str]) -> list[Problem]:
    """Citations of the shared reference folder, absolute paths and the research files by name."""
    out: list[Problem] = []
    for m in OLD_DECISIONS_RE.finditer(line):
        out.append(Problem(path, lineno, m.group(0).strip(), _suggest_decisions(m.group(1))))
    for m in OLD_KNOWLEDGE_RE.finditer(line):
        out.append(Problem(path, lineno, m.group(0).strip(), _suggest_knowledge(m.group(1), m.group(2))))
    reported: list[tuple[int, int]] = []  # one problem per path: /work/shared/perf/REPORT.md is one citation
    for m in ABSOLUTE_WORK_RE.finditer(line):
        reported.append(m.span())
        shared = SHARED_RE.search(m.group(0))
        advice = ("the shared reference folder is not part of the repository; "
                  + SHARED_ADVICE.get((shared.group(1) or "") if shared else "", CLINICAL_ADVICE)) if shared else \
            "an absolute path outside the repository; use a path relative to the repository root"
        out.append(Problem(path, lineno, m.group(0), advice))
    for m in SHARED_RE.finditer(line):
        if any(a <= m.start() < b for a, b in reported):
            continue
        reported.append(m.span())
        part = (m.group(1) or "").split("/")[0]
        out.append(Problem(path, lineno, m.group(0), "the shared reference folder is not part of the repository; "
                           + SHARED_ADVICE.get(part, CLINICAL_ADVICE + ", or " + PERF_ADVICE)))
    for m in FOREIGN_DOC_RE.finditer(line):
        if f"{m.group(1)}.md" in tracked_names or any(a <= m.start() < b for a, b in reported):
            continue
        out.append(Problem(path, lineno, m.group(0), f"{m.group(1)}.md is not in the repository; "
                           + FOREIGN_ADVICE[m.group(1)]))
    return out


def clinical_citations(path: str, lineno: int, line: str, docs: dict[str, set[str]]) -> list[Problem]:
    """Citations in the convention that have no anchor in docs/clinical."""
    out: list[Problem] = []
    decisions = docs.get(DECISIONS_DOC, set())
    knowledge = docs.get(KNOWLEDGE_DOC, set())
    for m in DECISION_RE.finditer(line):
        missing = [n for n in expand_numbers(m.group(1)) if f"decision-{n}" not in decisions]
        if missing:
            out.append(Problem(path, lineno, m.group(0), f"no decision {', '.join(map(str, missing))} in "
                               f"{DECISIONS_DOC} (anchors decision-1 ... decision-50)"))
    cited_spans: list[tuple[int, int]] = []
    for m in KNOWLEDGE_SECTION_RE.finditer(line):
        cited_spans.append(m.span())
        numbers = [m.group(1)] + re.findall(_SECTION, m.group(2) or "")
        missing = [n for n in numbers if section_anchor(n) not in knowledge]
        if missing:
            out.append(Problem(path, lineno, m.group(0), f"no section §{', §'.join(missing)} in {KNOWLEDGE_DOC}"))
    for m in BARE_SECTION_RE.finditer(line):
        if any(a <= m.start() < b for a, b in cited_spans) or _quoted(line, m.start(), m.end()):
            continue
        if path == KNOWLEDGE_DOC:  # the summary refers to its own sections
            if section_anchor(m.group(1)) not in knowledge:
                out.append(Problem(path, lineno, m.group(0), "no such section in this document"))
            continue
        if re.search(r"(RFC\s*\d+|DECISIONS|KNOWLEDGE|\.md)\s*$", line[:m.start()]):
            continue  # an RFC section, or already reported as an outside reference
        out.append(Problem(path, lineno, m.group(0), f"write `knowledge §{m.group(1)}` for the research summary "
                           "(or name the external document in words)"))
    for rx in (SIMPLE_ID_RE, RULE_ID_RE):
        for m in rx.finditer(line):
            token = m.group(1)
            if _quoted(line, m.start(1), m.end(1)):
                continue
            if item_anchor(token) not in knowledge:
                out.append(Problem(path, lineno, token, f"no item {token} in {KNOWLEDGE_DOC} (ambiguities A1-A20, "
                                   "B1-B5 with B4.1-B4.6, states S0-S7/S2b/S3R/S3I, knowledge §3.2 rule ids, "
                                   "knowledge §4.2 IVIG flags); if it is a code, write it in quotes or backticks"))
    return out


def scanned_files() -> list[str]:
    """Repository-relative paths of the text files to check: tracked, plus new files git does not ignore."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    out = []
    for rel in sorted({p for p in listed if p}):
        if rel in EXCLUDED_FILES or rel.startswith(EXCLUDED_DIRS) or set(Path(rel).parts) & FOREIGN_TREES:
            continue
        if Path(rel).suffix.lower() in BINARY_SUFFIXES or not (REPO / rel).is_file():
            continue
        out.append(rel)
    return out


def problems_in(rel: str, text: str, docs: dict[str, set[str]], tracked_names: set[str]) -> list[Problem]:
    out: list[Problem] = []
    for n, line in enumerate(text.splitlines(), 1):
        out += outside_references(rel, n, line, tracked_names)
        out += clinical_citations(rel, n, line, docs)
    return out


# ------------------------------------------------------------------------------------------ the checks
def test_every_reference_resolves_inside_the_repository():
    docs = anchors()
    files = scanned_files()
    tracked_names = {Path(f).name for f in files}
    problems: list[Problem] = []
    for rel in files:
        try:
            text = (REPO / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        problems += problems_in(rel, text, docs, tracked_names)
    assert len(files) > 100, "the file listing looks wrong"
    if problems:
        pytest.fail(f"{len(problems)} reference(s) do not resolve inside the repository (convention: "
                    "docs/clinical/README.md):\n" + "\n".join(map(str, problems)), pytrace=False)


def test_the_review_pack_has_every_numbered_item():
    docs = anchors()
    decisions, knowledge = docs[DECISIONS_DOC], docs[KNOWLEDGE_DOC]
    assert {f"decision-{n}" for n in range(1, 51)} <= decisions
    expected = ({f"a{n}" for n in range(1, 21)} | {f"b{n}" for n in range(1, 6)} | {f"b4-{n}" for n in range(1, 7)}
                | {"s0", "s1", "s2", "s2b", "s3r", "s3i", "s4", "s5", "s6", "s7"}
                | {section_anchor(s) for s in ("1", "2.1", "2.2", "2.3", "2.4", "3.1", "3.2", "3.3", "3.4",
                                               "4.1", "4.2", "4.3", "4.4")}
                | {"ren-ckd", "ren-aki", "ren-dm", "ren-age", "ren-vol", "ren-sepsis", "ren-paraprotein",
                   "ren-nephrotox", "ren-baseline-missing", "thr-age", "thr-immob", "thr-hypercoag",
                   "thr-history", "thr-estrogen", "thr-catheter", "thr-visc", "thr-cv", "hypervisc", "iga",
                   "iga-contra", "hf-vol", "ivig-ind-resistant", "ivig-ind-decomp", "ivig-ind-sfn", "ivig-ind-cb",
                   "ivig-best-candidate", "ivig-active"}
                | {f"ref-{n}" for n in range(1, 7)})
    assert expected - knowledge == set()
    for name, ids in docs.items():  # an anchor defined twice would make links ambiguous
        text = (REPO / name).read_text(encoding="utf-8")
        dupes = {i for i in ids if len(re.findall(rf'id="{re.escape(i)}"', text)) > 1}
        assert not dupes, f"{name}: anchors defined twice: {sorted(dupes)}"


LINK_RE = re.compile(r"\]\(([^)\s]+)\)")


def test_links_in_the_review_pack_resolve():
    docs = anchors()
    broken = []
    for doc in sorted(CLINICAL.glob("*.md")):
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for target in LINK_RE.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                file_part, _, anchor = target.partition("#")
                dest = (doc.parent / file_part).resolve() if file_part else doc
                if not dest.exists():
                    broken.append(f"docs/clinical/{doc.name}:{n}: {target} (no such file)")
                    continue
                rel = dest.relative_to(REPO).as_posix()
                if anchor and rel in docs and anchor not in docs[rel]:
                    broken.append(f"docs/clinical/{doc.name}:{n}: {target} (no anchor {anchor!r} in {rel})")
    assert not broken, "\n".join(broken)


def test_every_card_source_is_described_in_the_evidence_page():
    common = yaml.safe_load((REPO / "cards" / "_common.yaml").read_text(encoding="utf-8"))
    documented = anchors()["docs/clinical/evidence.md"]
    missing = [key for key in common["_sources"] if f"source-{key}" not in documented]
    assert not missing, f"card sources without an entry (anchor source-<key>) in docs/clinical/evidence.md: {missing}"


# ------------------------------------------------------------------------------------------ the checker itself
DOCS_FOR_UNIT = {DECISIONS_DOC: {f"decision-{n}" for n in range(1, 51)},
                 KNOWLEDGE_DOC: {"a7", "a19", "b4", "b4-3", "s3r", "s3", "ren-ckd", "section-4-2", "section-2-2",
                                 "section-3-2"}}


def _found(line: str, path: str = "cds_service/x.py") -> list[Problem]:
    return problems_in(path, line, DOCS_FOR_UNIT, {"README.md", "SOURCES.md"})


@pytest.mark.parametrize(("line", "advice"), [
    ("# ladder cards (DECISIONS 4-6)", "write `decisions 4-6`"),
    ("see DECISIONS 6 for suppression", "write `decision 6`"),
    ("Sources: `DECISIONS.md` (wins)", "cite a decision by number"),
    ("per KNOWLEDGE.md §4.2 with", "write `knowledge §4.2`"),
    ("(KNOWLEDGE §4.3): optional keys", "write `knowledge §4.3`"),
    ("(KNOWLEDGE B4.4, Pulm Ther 2021)", "write the item id alone, `B4.4`"),
    ("costs ~1 ms (shared/perf/REPORT.md §4)", "bench/README.md"),
    ("real clients, see ``shared/spec/CLIENTS.md``", "https://cds-hooks.hl7.org/2.0/"),
    ("(see ``.." "/shared/perf``)", "bench/RESULTS.md"),  # split: the literal is what the checker must catch
    ("Codes come from `/work/shared/clinical/terminology.json`", "docs/clinical/"),
    ("data in /work/other/place.json", "relative to the repository root"),
    ("as NOTES.md §1.9 says", "https://cds-hooks.hl7.org/2.0/"),
])
def test_old_forms_are_reported_with_what_to_write(line, advice):
    problems = _found(line)
    assert problems, f"not reported: {line!r}"
    assert any(advice in p.advice for p in problems), [str(p) for p in problems]


@pytest.mark.parametrize("line", [
    "# decision 19 and A7, B4.3, S3R, REN-CKD (knowledge §4.2)",
    "decisions 2, 8-12 and 19-20; knowledge §2.2 and §3.2",
    '"renal.sepsis": _icdp("A40", "A41", "R65.2"),',  # ICD-10 codes in a code list
    "codes: A15.0, A15.9 and `A41` are tuberculosis and sepsis",
    "HbA1c 6.5 %; G03.0; B39.9 histoplasmosis; ATC S01BA, L04AB02; 2.2 g/kg",
    "see tests/data/synthea-r4/SOURCES.md and README.md",
    "the S3 cards",
])
def test_valid_citations_and_codes_are_not_reported(line):
    assert _found(line) == []


@pytest.mark.parametrize(("line", "token"), [
    ("an unknown ambiguity A41 here", "A41"),
    ("decision 51 is not defined", "decision 51"),
    ("decisions 49-52", "decisions 49-52"),
    ("building block B6", "B6"),
    ("state S3X and S8", "S8"),
    ("rule REN-FOO", "REN-FOO"),
    ("knowledge §9.9", "knowledge §9.9"),
    ("a §2.2 contraindication code", "§2.2"),
])
def test_unresolved_citations_are_reported(line, token):
    assert token in [p.found for p in _found(line)]


def test_the_research_summary_may_name_its_own_sections():
    assert _found("as in §4.2 above", KNOWLEDGE_DOC) == []
    assert [p.found for p in _found("as in §9.1 above", KNOWLEDGE_DOC)] == ["§9.1"]
