"""Terminal rendering of cards (``cds-service evaluate``), the way an EHR sidebar shows them."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from cds_service.models import RULE_ID_EXTENSION

COLOURS = {"critical": "red", "warning": "yellow", "info": "blue"}


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def print_cards(response: dict[str, Any], title: str = "", console: Console | None = None) -> None:
    console = console or _console()
    cards = response.get("cards") or []
    if not cards:
        console.print(f"[bold]{title}[/bold]: no cards (no recommendation for this order)")
        return
    for card in cards:
        colour = COLOURS.get(card.get("indicator", ""), "white")
        body: list[Any] = []
        if card.get("detail"):
            body.append(Markdown(card["detail"]))
        for s in card.get("suggestions") or []:
            actions = "; ".join(a.get("description", "") for a in s.get("actions") or [])
            body.append(Text(f"➜ Suggestion: {s.get('label')}" + (f" — {actions}" if actions else ""), style="green"))
        for link in card.get("links") or []:
            body.append(Text(f"🔗 {link.get('label')}: {link.get('url')}", style="cyan"))
        if card.get("overrideReasons"):
            reasons = ", ".join(r.get("display", r.get("code", "")) for r in card["overrideReasons"])
            body.append(Text(f"Override reasons: {reasons}", style="dim"))
        src = card.get("source") or {}
        rule = (card.get("extension") or {}).get(RULE_ID_EXTENSION, "")
        body.append(Text(f"Source: {src.get('label', '')} {src.get('url', '')}  [{rule}]", style="dim"))
        from rich.console import Group

        console.print(Panel(Group(*body), title=f"[{colour} bold]{card.get('indicator', '').upper()}[/] "
                            f"{card.get('summary', '')}", title_align="left", border_style=colour))


def print_summary_line(name: str, response: dict[str, Any], console: Console | None = None) -> None:
    console = console or _console()
    cards = response.get("cards") or []
    counts = {k: sum(1 for c in cards if c.get("indicator") == k) for k in ("critical", "warning", "info")}
    rules = ", ".join((c.get("extension") or {}).get(RULE_ID_EXTENSION, "?") for c in cards) or "no cards"
    console.print(
        f"{name}: [red]{counts['critical']} critical[/red] [yellow]{counts['warning']} warning[/yellow] "
        f"[blue]{counts['info']} info[/blue] — {rules}"
    )
