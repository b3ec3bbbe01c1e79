"""The ``cds-service`` command: serve, evaluate fixture bundles, and operations (db, report, purge)."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import typer

app = typer.Typer(help="Neurosarcoidosis CDS Hooks service.", no_args_is_help=True, add_completion=False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: str = typer.Option(None, help="Interface to bind (default 127.0.0.1, or CDS_HOST)."),
    port: int = typer.Option(None, help="Port (default 8000, or CDS_PORT)."),
    workers: int = typer.Option(1, help="Worker processes (each a full service; share state via "
                                         "CDS_DATABASE_URL and CDS_REDIS_URL)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback bind without JWT "
                                                             "authentication (never with patient data)."),
) -> None:
    """Run the service with uvicorn."""
    import uvicorn
    from pydantic import ValidationError

    from cds_service.config import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:  # e.g. a malformed CDS_TRUSTED_ISSUERS: say what, without a traceback
        for err in exc.errors():
            name = "CDS_" + str(err["loc"][0]).upper() if err.get("loc") else "the settings"
            typer.secho(f"Configuration error in {name}: {err['msg']}", fg="red", err=True)
        raise typer.Exit(2) from None
    host = host or settings.host
    port = port or settings.port
    if not settings.auth_enabled:
        if not is_loopback(host) and not (insecure or settings.allow_insecure):
            typer.secho(
                f"Refusing to listen on {host} without authentication: set CDS_TRUSTED_ISSUERS "
                "(see README, Security) or pass --insecure for a throw-away test setup.",
                fg="red", err=True,
            )
            raise typer.Exit(2)
        typer.secho(
            "WARNING: no trusted issuers configured (CDS_TRUSTED_ISSUERS): authentication is OFF. "
            "Development use only.",
            fg="yellow", err=True,
        )
    from cds_service.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()  # PROMETHEUS_MULTIPROC_DIR must start empty (stale worker files add up)
    if settings.auth_enabled and workers > 1 and not settings.redis_url:
        typer.secho(
            "WARNING: several workers without CDS_REDIS_URL: each keeps its own JWT replay cache, so a token "
            "could be replayed once against every worker. Set CDS_REDIS_URL.",
            fg="yellow", err=True,
        )
    uvicorn.run(
        "cds_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        proxy_headers=True,
    )


def _bundle_paths(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.glob("*.json"))
    return [target]


@app.command()
def evaluate(
    bundle: Path = typer.Argument(..., exists=True, help="A FHIR R4 Bundle (JSON), or a folder of them."),
    hook: str = typer.Option(None, help="order-select or order-sign (default: the fixture's own hook from "
                                        "fixtures/expected/<name>.yaml, else order-select)."),
    order: str = typer.Option(None, help="The order to place, e.g. MedicationRequest/ivig-1 (default: the "
                                         "fixture's own order, else every draft order in the bundle)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw CDS Hooks response (for a folder: a JSON "
                                                       "array of {bundle, hook, response})."),
) -> None:
    """Run the rules on a fixture bundle and print the cards (a folder: one line per bundle)."""
    from cds_service.evaluate import evaluate_bundle
    from cds_service.preview.fixtures import expectation_for
    from cds_service.preview.validate import validate_bundle
    from cds_service.render import print_cards, print_summary_line

    paths = _bundle_paths(bundle)
    if not paths:
        typer.secho(f"{bundle}: no *.json bundles in this folder.", fg="red", err=True)
        raise typer.Exit(1)
    failed = False
    collected = []
    for path in paths:
        meta = expectation_for(path)
        run_hook = hook or meta.get("hook") or "order-select"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            validate_bundle(data)  # the same entry-naming checks as POST /fixtures/evaluate
            request, response = evaluate_bundle(data, run_hook, order or meta.get("order"))
        except Exception as exc:  # noqa: BLE001 - report every bundle, keep going
            failed = True
            typer.secho(f"{path.name}: {exc}", fg="red", err=True)
            continue
        if as_json:
            collected.append({"bundle": path.name, "hook": run_hook, "response": response})
        elif len(paths) > 1:
            print_summary_line(path.name, response, expected=meta.get("cards") if meta else None)
        else:
            print_cards(response, title=f"{path.name} ({run_hook})")
    if as_json:
        out = collected if bundle.is_dir() else (collected[0]["response"] if collected else None)
        if out is not None:
            sys.stdout.write(json.dumps(out, indent=2) + "\n")
    if failed:
        raise typer.Exit(1)


def main() -> None:  # console-script entry point
    _register_optional_commands()
    app()


def _register_optional_commands() -> None:
    """Commands that live beside their subsystem (db, report, purge)."""
    import importlib

    for name in ("cds_service.store.cli",):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(app)


if __name__ == "__main__":
    main()
