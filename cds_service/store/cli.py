"""Operations commands: ``cds-service report``, ``cds-service db upgrade|current|revision``, ``cds-service purge``.

They read the same settings as the service (``CDS_DATABASE_URL`` or the SQLite file in ``CDS_DATA_DIR``),
so run them with the service's environment. Each says on stderr which database it uses (never its
credentials). Only ``db upgrade`` creates a database: ``report``, ``purge`` and ``db current`` refuse a
SQLite file that does not exist (run from another directory, ``CDS_DATA_DIR`` points elsewhere) instead of
creating an empty one and reporting nothing.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import typer

from cds_service.store.base import RuleReport
from cds_service.store.commands import _missing_sqlite_file, _require_tables, _run, _settings

db_app = typer.Typer(help="Database schema (migrations ship inside the package).", no_args_is_help=True)


def parse_when(value: str | None, *, end: bool = False) -> datetime | None:
    """``2026-01-31`` or an ISO date-time; a bare date as ``--until`` includes that whole day."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a date (YYYY-MM-DD) or ISO date-time.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def report_json(rules: list[RuleReport]) -> dict:
    return {"rules": [r.to_dict() for r in rules]}


def _print_table(rules: list[RuleReport], since, until, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    period = f"{since:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} UTC" if since and until else (
        f"since {since:%Y-%m-%d %H:%M} UTC" if since else (f"until {until:%Y-%m-%d %H:%M} UTC" if until else
                                                            "all time"))
    table = Table(title=f"Cards and feedback per rule ({period})")
    table.add_column("Rule", no_wrap=True)
    table.add_column("Shown", justify="right")
    table.add_column("Accepted", justify="right")
    table.add_column("Overridden", justify="right")
    table.add_column("Override rate", justify="right")
    table.add_column("Top override reasons")
    for r in rules:
        reasons = sorted(r.override_reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        text = "\n".join(f"{code}" + (f" ({r.reason_displays[code]})" if code in r.reason_displays else "")
                         + f": {n}" for code, n in reasons)
        rate = f"{r.override_rate:.0%}" if r.override_rate is not None else "-"
        table.add_row(r.rule, str(r.shown), str(r.accepted), str(r.overridden), rate, text or "-")
    console = Console()
    if not rules:
        console.print(f"No cards or feedback recorded ({period}).")
        return
    console.print(table)
    console.print("Feedback counts distinct cards and is attributed to the period the card was shown in; "
                  "'unknown' collects feedback on cards not in the store (by feedback time).", style="dim")


def report(
    since: str = typer.Option(None, help="From this date (YYYY-MM-DD or ISO date-time, UTC); default: all time."),
    until: str = typer.Option(None, help="Up to and including this date (or before this date-time)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"rules": [...]} as JSON.'),
    top: int = typer.Option(3, min=1, help="Override reasons shown per rule in the table."),
    html: Path = typer.Option(None, "--html", dir_okay=False, writable=True,
                              help="Write the alert-burden report (weekly charts per rule, rates per 100 relevant "
                                   "orders, override rates with intervals, before/after versions) to this "
                                   "self-contained HTML file. Needs the 'report' extra (matplotlib)."),
    demo_history: bool = typer.Option(False, "--demo-history",
                                      help="With --html: report on a generated 12-week history instead of the "
                                           "database (to see what the report shows; nothing is written to it)."),
    hook: list[str] = typer.Option(None, "--hook", help="With --html: only these order hooks (order-select, "
                                                        "order-sign); default both."),
) -> None:
    """Override analytics per rule: cards shown, accepted, overridden, override rate and reasons."""
    start, end = parse_when(since), parse_when(until, end=True)
    if demo_history and html is None:
        raise typer.BadParameter("--demo-history needs --html FILE.", param_hint="--demo-history")
    if html is not None:
        from cds_service.governance.burden import ORDER_HOOKS
        from cds_service.governance.cli import html_report

        hooks = tuple(hook) if hook else ORDER_HOOKS
        unknown = [h for h in hooks if h not in ORDER_HOOKS]
        if unknown:
            raise typer.BadParameter(f"'{unknown[0]}' is not an order hook (order-select, order-sign).",
                                     param_hint="--hook")
        figures = html_report(html, since=start, until=end, hooks=hooks, demo=demo_history)
        typer.echo(f"Wrote {html} ({len(figures['rules'])} rules, {len(figures['weeks'])} weeks).", err=True)
        if as_json:
            sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return

    async def go(store):
        await _require_tables(store)
        return await store.report(start, end)

    rules = _run(go)
    if as_json:
        sys.stdout.write(json.dumps(report_json(rules), indent=2) + "\n")
    else:
        _print_table(rules, start, end, top)


def purge(
    older_than_days: int = typer.Option(None, min=1, help="Delete cards and feedback older than this many "
                                                          "days (default CDS_AUDIT_RETENTION_DAYS, 365)."),
) -> None:
    """Delete audit rows past the retention period (the service also does this every 6 hours)."""
    days = older_than_days or _settings().audit_retention_days
    if days <= 0:
        typer.secho("Retention is disabled (CDS_AUDIT_RETENTION_DAYS <= 0); pass --older-than-days.",
                    fg="yellow", err=True)
        raise typer.Exit(2)
    before = datetime.now(UTC) - timedelta(days=days)

    async def go(store):
        await _require_tables(store)
        return await store.purge(before)

    deleted = _run(go)
    typer.echo(f"Deleted {deleted} rows recorded before {before:%Y-%m-%d %H:%M} UTC ({days} days).")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the tables to the latest version (idempotent; the service also does it at start)."""
    from cds_service.store.migrate import head_revision

    async def go(store):
        await store.upgrade()
        return await store.revision()

    revision = _run(go, create=True)
    typer.echo(f"Database is at revision {revision} (head {head_revision()}).")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database (none when never initialised)."""
    async def go(store):
        return await store.revision()

    settings = _settings()
    if _missing_sqlite_file(settings) is not None:  # not created: a look must not leave an empty database
        typer.echo(f"Database: {settings.database_label} (no such file)", err=True)
        typer.echo("none")
        return
    typer.echo(_run(go) or "none")


@db_app.command("revision")
def db_revision(message: str = typer.Option(..., "-m", "--message", help="What the migration changes.")) -> None:
    """(Developers) autogenerate a migration from store/schema.py against an up-to-date database."""
    from cds_service.store import migrate

    async def go(store):
        await store.upgrade()
        await migrate.autogenerate(store.engine, message)

    _run(go, create=True)


def register(app: typer.Typer) -> None:
    from cds_service.governance.cli import register as register_governance

    app.command("report")(report)
    register_governance(app)
    app.command("purge")(purge)
    app.add_typer(db_app, name="db")
