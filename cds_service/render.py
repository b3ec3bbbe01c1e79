"""Terminal rendering of cards (``cds-service evaluate``), the way an EHR sidebar shows them.

Card text is data, not Rich markup: every string from a card goes in as :class:`rich.text.Text` (which
also strips terminal control codes), so a ``[red]`` or an escape sequence in a summary can neither
break the output nor drive the terminal.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from cds_service.models import EVIDENCE_EXTENSION, INDICATOR_RANK, RULE_ID_EXTENSION

COLOURS = {"critical": "red", "warning": "yellow", "info": "blue"}
ICONS = {"critical": "■", "warning": "▲", "info": "●"}


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _s(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def rule_id(card: dict[str, Any]) -> str:
    return _s((card.get("extension") or {}).get(RULE_ID_EXTENSION)) or "?"


def sorted_cards(response: dict[str, Any]) -> list[dict[str, Any]]:
    """Critical first, then warning, then info (stable within a level), as sidebars list them."""
    cards = [c for c in response.get("cards") or [] if isinstance(c, dict)]
    return sorted(cards, key=lambda c: INDICATOR_RANK.get(c.get("indicator"), 3))


def _card_panel(card: dict[str, Any]) -> Panel:
    indicator = _s(card.get("indicator")) or "info"
    colour = COLOURS.get(indicator, "white")
    # The summary goes in the body, not the panel title: a title is cut at the panel width.
    body: list[Any] = [Text(_s(card.get("summary")), style="bold")]
    if card.get("detail"):
        body += [Text(""), Markdown(_s(card["detail"]))]
    suggestions = card.get("suggestions") or []
    if suggestions:
        hint = " (choose at most one)" if card.get("selectionBehavior") == "at-most-one" else ""
        body.append(Text(f"Suggestions{hint}:", style="bold"))
    for s in suggestions:
        line = Text("  ➜ ", style="green")
        line.append(_s(s.get("label")), style="bold green")
        if s.get("isRecommended"):
            line.append(" (recommended)", style="green")
        body.append(line)
        for a in s.get("actions") or []:
            body.append(Text(f"      {_s(a.get('type'))}: {_s(a.get('description'))}", style="green"))
    for link in card.get("links") or []:
        smart = f" (SMART app, appContext {_s(link.get('appContext'))})" if link.get("type") == "smart" else ""
        body.append(Text(f"🔗 {_s(link.get('label'))}: {_s(link.get('url'))}{smart}", style="cyan"))
    evidence = (card.get("extension") or {}).get(EVIDENCE_EXTENSION)
    for item in evidence if isinstance(evidence, list) else [evidence] if isinstance(evidence, dict) else []:
        if isinstance(item, dict):
            parts = [_s(item.get(k)) for k in ("level", "citation", "url") if item.get(k)]
            body.append(Text("Evidence: " + " · ".join(parts), style="cyan"))
    if card.get("overrideReasons"):
        reasons = ", ".join(_s(r.get("display") or r.get("code")) for r in card["overrideReasons"])
        body.append(Text(f"Override reasons: {reasons}", style="dim"))
    src = card.get("source") or {}
    source = " ".join(p for p in (_s(src.get("label")), _s(src.get("url"))) if p)
    body.append(Text(f"Source: {source}  [{rule_id(card)}]", style="dim"))
    title = Text(f"{ICONS.get(indicator, '')} {indicator.upper()}", style=f"{colour} bold")
    return Panel(Group(*body), title=title, title_align="left", border_style=colour)


def print_cards(response: dict[str, Any], title: str = "", console: Console | None = None) -> None:
    console = console or _console()
    cards = sorted_cards(response)
    heading = Text(title, style="bold") if title else Text()
    if not cards:
        console.print(heading + Text(": no cards (no recommendation for this order)" if title else
                                     "No cards (no recommendation for this order)"), soft_wrap=True)
        return
    counts = Counter(c.get("indicator") for c in cards)
    summary = ", ".join(f"{counts[k]} {k}" for k in ("critical", "warning", "info") if counts[k])
    console.print(heading + Text(f"{': ' if title else ''}{len(cards)} card{'s' if len(cards) != 1 else ''} "
                                 f"({summary})"), soft_wrap=True)
    for card in cards:
        console.print(_card_panel(card))


def compare(response: dict[str, Any], expected: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(missing, unexpected) cards, counted per rule id (and indicator) like the fixture tests."""
    with_indicator = all("indicator" in c for c in expected)

    def key(rule: Any, indicator: Any) -> str:
        return f"{_s(rule) or '?'} ({_s(indicator)})" if with_indicator else _s(rule) or "?"

    got = Counter(key(rule_id(c), c.get("indicator")) for c in sorted_cards(response))
    want = Counter(key(c.get("rule_id"), c.get("indicator")) for c in expected)
    return sorted((want - got).elements()), sorted((got - want).elements())


def print_summary_line(name: str, response: dict[str, Any], console: Console | None = None,
                       expected: list[dict[str, str]] | None = None) -> None:
    """One line per bundle; with an expectation (fixtures/expected/<name>.yaml) a ✓ or ✗ and the difference."""
    console = console or _console()
    cards = sorted_cards(response)
    counts = Counter(c.get("indicator") for c in cards)
    line = Text(f"{name}: ")
    for k in ("critical", "warning", "info"):
        line.append(f"{counts[k]} {k} ", style=COLOURS[k] if counts[k] else "dim")
    line.append("— " + (", ".join(rule_id(c) for c in cards) or "no cards"))
    if expected is not None:
        missing, unexpected = compare(response, expected)
        if not missing and not unexpected:
            line.append("  ✓ as expected", style="green")
        else:
            diff = "; ".join(p for p in (("missing " + ", ".join(missing)) if missing else "",
                                         ("unexpected " + ", ".join(unexpected)) if unexpected else "") if p)
            line.append(f"  ✗ {diff}", style="red")
    console.print(line, soft_wrap=True)  # one line per bundle, even when piped: greppable
