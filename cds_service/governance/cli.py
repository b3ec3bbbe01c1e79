"""``cds-service rules`` (modes, versions, what changed) and the HTML alert-burden report behind
``cds-service report --html FILE`` (optionally on a generated history: ``--demo-history``)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import typer

from cds_service.store.base import StoreError


def _settings():
    from cds_service.cli import configured_settings

    return configured_settings()


def _modes(settings):
    from cds_service.governance.modes import load_rule_modes

    return load_rule_modes(settings.rules_file)  # checked by configured_settings: no error here


async def _history(store) -> dict[str, list]:
    out: dict[str, list] = {}
    for row in await store.rule_version_history():
        out.setdefault(row.rule_id, []).append((row.version, row.first_seen, row.inputs))
    return out


async def _stored_history(settings) -> dict[str, list] | None:
    """The stored versions, or None when there is no store to read (never creates one)."""
    from cds_service.store import open_store
    from cds_service.store.commands import _missing_sqlite_file

    if _missing_sqlite_file(settings) is not None:
        return None
    store = open_store(settings)
    try:
        if await store.revision() is None:
            return None
        return await _history(store)
    finally:
        await store.close()


def rule_rows(modes, current, history: dict[str, list] | None) -> list[dict]:
    """One row per rule: mode, version, since when, the previous version and what changed since it."""
    from cds_service.governance.versions import changes

    rows = []
    for rule_id, now in current.items():
        seen = (history or {}).get(rule_id, [])
        versions = [v for v, _at, _inputs in seen]
        row = {"rule": rule_id, "mode": modes.mode(rule_id), "version": now.version, "since": None,
               "previous": None, "changes": []}
        if now.version in versions:
            i = versions.index(now.version)
            row["since"] = seen[i][1].isoformat()
            previous = seen[i - 1] if i else None
            status = None
        else:
            previous = seen[-1] if seen else None
            status = "new: not yet run by the service" if history is not None else None
        if previous is not None:
            row["previous"] = previous[0]
            row["changes"] = changes(previous[2], now.inputs)
        if status:
            row["since"] = status
        rows.append(row)
    return rows


def rules(as_json: bool = typer.Option(False, "--json", help='Print {"rules": [...]} as JSON.')) -> None:
    """The rules with their mode (CDS_RULES_FILE), version, and what changed since the previous version
    the service ran with (read from the audit store when there is one)."""
    from cds_service.governance.versions import current_versions

    settings = _settings()
    modes = _modes(settings)
    try:
        history = asyncio.run(_stored_history(settings))
    except StoreError as exc:
        typer.secho(f"Warning: the stored rule versions cannot be read ({exc}); showing the current ones.",
                    fg="yellow", err=True)
        history = None
    rows = rule_rows(modes, current_versions(), history)
    if as_json:
        sys.stdout.write(json.dumps({"rules_file": str(settings.rules_file) if settings.rules_file else None,
                                     "rules": rows}, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Rules ({settings.rules_file or 'no CDS_RULES_FILE: every rule on'})")
    for name in ("Rule", "Mode", "Version", "Since", "Previous", "Changed since the previous version"):
        table.add_column(name, no_wrap=name in ("Rule", "Version", "Previous"))
    for r in rows:
        style = {"shadow": "yellow", "off": "dim"}.get(r["mode"])
        since = r["since"] or "-"
        if since[:4].isdigit():  # a time: to the minute, UTC
            since = since[:16].replace("T", " ")
        table.add_row(r["rule"], r["mode"], r["version"], since, r["previous"] or "-",
                      "\n".join(r["changes"]) or "-", style=style)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # piped: do not squeeze the table
    console.print(table)
    if history is None:
        console.print("No audit store to compare with: versions are those of this configuration.", style="dim")


def html_report(out: Path, *, since: datetime | None, until: datetime | None, hooks: tuple[str, ...],
                demo: bool) -> dict:
    """Write the HTML report to ``out``; returns the figures (as in ``--json``)."""
    from cds_service.governance import burden, report_html, versions

    kinds = {rule: spec["orders"] for rule, spec in versions.rule_inputs().items()}

    async def figures(store, modes: dict[str, str]):
        rows = await store.governance_rows(since, until)
        history = await _history(store)
        return burden.compute(rows, modes=modes, order_kinds=kinds, history=history, hooks=hooks, since=since,
                              until=until, changes_of=versions.changes)

    if demo:
        from cds_service.governance import demo as demo_history
        from cds_service.store import open_store

        async def go():
            with tempfile.TemporaryDirectory(prefix="cds-demo-") as tmp:
                store = open_store(f"sqlite+aiosqlite:///{tmp}/demo.db")
                try:
                    history = await demo_history.fill(store)
                    return await figures(store, history.truth.modes)
                finally:
                    await store.close()

        result = asyncio.run(go())
        source, rules_file = "a synthetic demo history (cds-service report --demo-history)", "demo plan"
    else:
        from cds_service.store.commands import _require_tables, _run

        settings = _settings()
        modes = _modes(settings)

        async def go(store):
            await _require_tables(store)
            return await figures(store, dict(modes.modes))

        result = _run(go)
        source, rules_file = settings.database_label, str(settings.rules_file) if settings.rules_file else None
    try:
        text = report_html.render(result, source=source, rules_file=rules_file)
    except report_html.ReportUnavailable as exc:
        typer.secho(f"Error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    out.write_text(text, encoding="utf-8")
    return result.to_dict()


def register(app: typer.Typer) -> None:
    app.command("rules")(rules)
