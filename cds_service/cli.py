"""The ``cds-service`` command: serve, evaluate fixture bundles, and operations (db, report, purge).

Every command reads its configuration through :func:`configured_settings`: a wrong setting is one line
naming it and what it expects, exit 2, never a traceback. Logs go to stderr as structured lines without
exception messages or local variables (:mod:`cds_service.logs`), so nothing a command prints carries
patient data; ``evaluate --json`` keeps stdout pure JSON.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
import logging
import socket
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

    from cds_service.config import Settings

# Young-generation GC threshold for the served process: a hook call allocates thousands of short-lived
# containers, all still alive while the default threshold (700) would trigger collections over them.
GC_THRESHOLDS = (50_000, 20, 100)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# The colours of the lines `say` prints (ANSI, as the command-line library writes them).
COLOURS = {"red": "\x1b[31m", "yellow": "\x1b[33m"}


def say(message: str, colour: str) -> None:
    """One line on stderr, in ``colour`` when stderr is a terminal, plain otherwise (as Typer's ``secho``)."""
    stream = sys.stderr
    if stream is None:  # no standard streams (a detached process)
        return
    try:
        terminal = stream.isatty()
    except Exception:  # noqa: BLE001 - a replaced stream without a terminal behind it
        terminal = False
    stream.write(f"{COLOURS[colour]}{message}\x1b[0m\n" if terminal else f"{message}\n")
    stream.flush()


def fail(message: str, code: int = 2) -> SystemExit:
    """Print one line on stderr and return the exit to raise."""
    say(message, "red")
    return SystemExit(code)


def configured_settings() -> Settings:
    """Every setting checked (service, thresholds, site codes) and logging sent to stderr; exit 2 on a mistake."""
    from cds_service import logs
    from cds_service.config import ConfigurationError, load_configuration

    try:
        settings = load_configuration()
    except ConfigurationError as exc:
        for line in exc.lines:
            say(line, "red")
        raise SystemExit(2) from None
    logs.configure(settings.log_level, settings.log_json)
    return settings


# --------------------------------------------------------------------------- serve
def base_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def listening_line(url: str, preview: bool = True, workers: int = 1) -> str:
    parts = [f"OpenAPI page {url}/docs"]
    if preview:
        parts.append(f"card preview {url}/")
    who = f" ({workers} workers)" if workers > 1 else ""
    return f"cds-service listening on {url}{who} — {', '.join(parts)}"


class ListeningLine(logging.Filter):
    """On uvicorn's logger: prints our one line once the socket listens; lets only warnings and errors through.

    uvicorn logs 'Uvicorn running on <scheme>://<host>:<port>' when it has bound the port (after the
    application started, with one worker; when the workers' shared socket is bound, with several).
    """

    def __init__(self, preview: bool = True, workers: int = 1) -> None:
        super().__init__()
        self.preview = preview
        self.workers = workers

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if isinstance(record.msg, str) and record.msg.startswith("Uvicorn running on") and \
                isinstance(record.args, tuple) and len(record.args) == 3:
            scheme, host, port = record.args
            sys.stdout.write(listening_line(base_url(scheme, host, port), self.preview, self.workers) + "\n")
            sys.stdout.flush()
        return False


def uvicorn_log_config(preview: bool, workers: int) -> dict:
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"listening": {"()": f"{__name__}.ListeningLine", "preview": preview, "workers": workers}}
    config["handlers"]["default"]["filters"] = ["listening"]
    config["loggers"]["uvicorn.error"]["level"] = "INFO"
    return config


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, no permission, not an address here), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"Port {port} on {host} is already in use (another cds-service?): stop that process, or "
                        f"choose another port with --port or CDS_PORT.")
            if exc.errno == errno.EACCES:
                return f"No permission to listen on port {port}: use a port above 1023 (--port or CDS_PORT)."
            reason = exc.strerror or type(exc).__name__
            return f"Cannot listen on {host}:{port} ({reason}): check --host / CDS_HOST."
    return None


def serve(host: str | None = None, port: int | None = None, workers: int = 1, insecure: bool = False) -> None:
    """Run the service with uvicorn; prints one line with its URLs once it listens."""
    import gc

    # With one worker, this process loads the service: hundreds of thousands of objects that live as long as it
    # does, which the cyclic collector would walk over and over while they are made (0.05-0.1 s of CPU before
    # the first answer). It is off until the application is loaded (tune_gc freezes them and turns it back on),
    # and back on whatever happens here. Several workers load the service each in a process of its own.
    paused = workers == 1 and gc.isenabled()
    if paused:
        gc.disable()
    try:
        _serve(host, port, workers, insecure)
    finally:
        if paused:
            gc.enable()


def _serve(host: str | None, port: int | None, workers: int, insecure: bool) -> None:
    from cds_service.config import Settings, expected_value

    settings = configured_settings()
    host = host or settings.host
    port = settings.port if port is None else port
    if not 1 <= port <= 65535:
        raise fail(f"Error in --port: expected {expected_value(Settings, 'port')}.")
    if workers < 1:
        raise fail("Error in --workers: expected a whole number of at least 1.")
    if not settings.auth_enabled:
        if not is_loopback(host) and not (insecure or settings.allow_insecure):
            raise fail(f"Refusing to listen on {host} without authentication: set CDS_TRUSTED_ISSUERS "
                       "(see docs/security.md) or pass --insecure for a throw-away test setup.")
        say("WARNING: no trusted issuers configured (CDS_TRUSTED_ISSUERS): authentication is OFF. "
                    "Development use only.", "yellow")
    if settings.auth_enabled and workers > 1 and not settings.redis_url:
        say("WARNING: several workers without CDS_REDIS_URL: each keeps its own JWT replay cache, so a "
                    "token could be replayed once against every worker. Set CDS_REDIS_URL.", "yellow")
    problem = port_problem(host, port)
    if problem:
        raise fail(problem)
    _run_uvicorn(settings, host, port, workers)


def tune_gc() -> None:
    """Garbage-collector settings for a long-running server, applied once the application is loaded.

    The objects alive at that point (FastAPI, pydantic models, the card library) live as long as the process:
    frozen, the cyclic collector no longer walks them on every full collection. Non-cyclic garbage is freed
    by reference counting whatever the thresholds, so collecting cycles less often costs little memory.
    They are frozen without a collection first: loading leaves almost no cyclic garbage (76 unreachable
    objects among 78,000), and a collection would walk every one of them once more before the first answer.
    The collector is on from here (``serve`` turns it off while one process loads the service).
    """
    import gc

    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()


def import_fastapi() -> None:
    """FastAPI imported with pydantic's ``defer_build`` on: the pydantic models of its OpenAPI document (about
    sixty, built at import otherwise) are built when the document is first asked for (``/docs``), not at every
    start, about 0.1 s of CPU before the first hook call. What they validate and produce is unchanged: only
    when pydantic builds them. Only the served process does this (``create_app`` alone leaves FastAPI as it
    is); pydantic keeps its defaults in a private module, and without it FastAPI is imported as it is."""
    import sys

    if "fastapi" in sys.modules:
        return
    try:
        from pydantic._internal._config import config_defaults
    except ImportError:  # pragma: no cover - another pydantic
        config_defaults = None
    if not isinstance(config_defaults, dict) or "defer_build" not in config_defaults:  # pragma: no cover
        return
    before = config_defaults["defer_build"]
    config_defaults["defer_build"] = True
    try:
        import fastapi.applications  # noqa: F401 - the models are created (not built) by this import
    finally:
        config_defaults["defer_build"] = before


def served_app():
    """The application ``cds-service serve`` runs (in every worker): :func:`create_app` with :func:`tune_gc`."""
    import_fastapi()
    from cds_service.app import create_app

    app = create_app()
    app.state.started_hooks.append(tune_gc)
    return app


def _run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    from cds_service.metrics import own_multiprocess_dir

    # Several workers each count their own requests: without a shared directory /metrics would report
    # whichever worker answered. `own_multiprocess_dir` makes one for this run when none is configured.
    with own_multiprocess_dir(workers > 1):
        uvicorn.run(
            "cds_service.cli:served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_level=None,
            log_config=uvicorn_log_config(settings.fixture_endpoint_enabled, workers),
            proxy_headers=True,
            ws="none",  # no WebSocket endpoint: uvicorn loads no WebSocket protocol (the websockets package)
        )


# --------------------------------------------------------------------------- evaluate
def _bundle_paths(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.glob("*.json"))
    return [target]


def _failed(response: dict) -> bool:
    from cds_service.models import RULE_ID_EXTENSION
    from cds_service.response import EVALUATION_FAILED_RULE

    return any((c.get("extension") or {}).get(RULE_ID_EXTENSION) == EVALUATION_FAILED_RULE
               for c in response.get("cards") or [] if isinstance(c, dict))


def _bundle_error(exc: Exception) -> str:
    """What was wrong with a bundle, in words that cannot carry its content."""
    from cds_service.errors import ServiceError

    if isinstance(exc, ServiceError):  # our own messages name entries by type/id, never a Patient
        return exc.message
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return f"could not be evaluated ({type(exc).__name__})"


def evaluate(bundle: Path, hook: str | None = None, order: str | None = None, as_json: bool = False) -> None:
    """Run the rules on a fixture bundle and print the cards (a folder: one line per bundle).

    Exits 1 when a bundle cannot be read or its evaluation failed, 2 on a configuration error.
    """
    settings = configured_settings()
    from cds_service.services import registry

    services = registry(settings)
    if hook is not None and services.for_hook(hook) is None:
        raise fail(f"Error in --hook: expected one of {', '.join(services.hooks)}.")
    from cds_service.evaluate import evaluate_bundle
    from cds_service.preview.fixtures import expectation_for
    from cds_service.preview.validate import validate_bundle
    from cds_service.render import print_cards, print_summary_line

    paths = _bundle_paths(bundle)
    if not paths:
        raise fail(f"{bundle}: no *.json bundles in this folder.", 1)
    failed = False
    collected = []
    for path in paths:
        meta = expectation_for(path)
        run_hook = hook or meta.get("hook") or "order-select"
        run_service = services.for_hook(run_hook)
        run_order = (order or meta.get("order")) if run_service is None or run_service.places_orders else None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            validate_bundle(data)  # the same entry-naming checks as POST /fixtures/evaluate
            request, response = evaluate_bundle(data, run_hook, run_order)
        except Exception as exc:  # noqa: BLE001 - report every bundle, keep going
            failed = True
            say(f"{path.name}: {_bundle_error(exc)}", "red")
            continue
        if _failed(response):
            failed = True
            say(f"{path.name}: evaluation failed: the rules stopped with an internal error (see the log "
                "line above); no recommendation was made.", "red")
        if as_json:
            collected.append({"bundle": path.name, "hook": run_hook, "response": response})
        elif len(paths) > 1:
            own_hook = run_hook == (meta.get("hook") or "order-select")
            print_summary_line(path.name, response, expected=meta.get("cards") if meta and own_hook else None)
        else:
            print_cards(response, title=f"{path.name} ({run_hook})")
    if as_json:
        out = collected if bundle.is_dir() else (collected[0]["response"] if collected else None)
        if out is not None:
            sys.stdout.write(json.dumps(out, indent=2) + "\n")
    if failed:
        raise SystemExit(1)


# --------------------------------------------------------------------------- entry point
def _unexpected(exc: BaseException) -> str:
    """An unexpected failure as its type and innermost place: no message, no locals (either may hold data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"cds-service failed unexpectedly: {type(exc).__name__}{where}. Please report it."


# `serve`'s options that take a value, by the parameter each sets.
SERVE_VALUE_OPTIONS = {"--host": "host", "--port": "port", "--workers": "workers"}


def quick_serve_arguments(args: list[str]) -> dict | None:
    """``serve``'s arguments read without the command-line library, or None to let it read them.

    Typer's import and the pydantic validator it builds for each parameter it reads are about 4 % of the
    instructions from exec to the first hook answer (bench/README.md, cold start). The usual spellings
    (``--host H``, ``--port=N``, ``--workers N``, ``--insecure``, each once, numbers as plain digits) are read
    here to the same values; anything else (help, a mistake, an unusual spelling) is None, and Typer reads it
    with its own messages."""
    if not args or args[0] != "serve":
        return None
    options: dict = {}
    rest = iter(args[1:])
    for arg in rest:
        flag, equals, value = arg.partition("=")
        name = "insecure" if arg == "--insecure" else SERVE_VALUE_OPTIONS.get(flag)
        if name is None or name in options:
            return None
        if name == "insecure":
            options[name] = True
            continue
        value = value if equals else next(rest, "")
        if not value or value.startswith("-"):
            return None
        if name != "host":
            if not (value.isascii() and value.isdigit()) or (value.startswith("0") and value != "0"):
                return None
            value = int(value)
        options[name] = value
    return options


def main(argv: list[str] | None = None) -> None:  # console-script entry point
    from cds_service import logs

    args = sys.argv[1:] if argv is None else list(argv)
    quick = quick_serve_arguments(args)
    if quick is None:
        return _run_command_line(args)
    logs.configure()  # before anything can log: stderr, no exception messages or locals
    try:
        serve(**quick)
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - every failure is one line
        sys.stderr.write(_unexpected(exc) + "\n")
        sys.exit(1)
    sys.exit(0)


def _run_command_line(args: list[str]) -> None:
    """Every command through Typer (its help, its usage errors); exits."""
    import typer

    from cds_service import logs

    app = command_line_app()
    logs.configure()  # before anything can log: stderr, no exception messages or locals
    try:
        code = app(args=args, prog_name="cds-service", standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - every failure is one line
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            # a usage error from the command-line parser (click's ClickException, however typer ships it)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if getattr(ctx, "command_path", None) else ""
            sys.stderr.write(f"Error: {exc.format_message()}{hint}\n")
            sys.exit(exc.exit_code)
        sys.stderr.write(_unexpected(exc) + "\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


@functools.cache
def command_line_app() -> typer.Typer:
    """The ``cds-service`` commands as a Typer application (also ``cds_service.cli.app``), made on first use:
    ``serve`` with its usual arguments does without it (:func:`quick_serve_arguments`)."""
    import typer

    app = typer.Typer(help="Neurosarcoidosis CDS Hooks service.", no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False)
    _add_commands(app)
    _register_optional_commands(app)
    return app


def __getattr__(name: str):
    if name == "app":
        return command_line_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _add_commands(app: typer.Typer) -> None:
    """``serve`` and ``evaluate`` with their options and help, each calling the function of the same name."""
    import typer

    @app.command("serve")
    def serve_command(
        host: str = typer.Option(None, help="Interface to bind (default 127.0.0.1, or CDS_HOST)."),
        port: int = typer.Option(None, help="Port (default 8000, or CDS_PORT)."),
        workers: int = typer.Option(1, help="Worker processes (each a full service; share state via "
                                             "CDS_DATABASE_URL and CDS_REDIS_URL; metrics are summed across them)."),
        insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback bind without JWT "
                                                                 "authentication (never with patient data)."),
    ) -> None:
        """Run the service with uvicorn; prints one line with its URLs once it listens."""
        serve(host, port, workers, insecure)

    @app.command("evaluate")
    def evaluate_command(
        bundle: Path = typer.Argument(..., exists=True, help="A FHIR R4 Bundle (JSON), or a folder of them."),
        hook: str = typer.Option(None, help="A hook the services answer: order-select, order-sign, patient-view "
                                            "or a site's own (default: the fixture's own hook from "
                                            "fixtures/expected/<name>.yaml, else order-select)."),
        order: str = typer.Option(None, help="The order to place, e.g. MedicationRequest/ivig-1 (default: the "
                                             "fixture's own order, else every draft order in the bundle)."),
        as_json: bool = typer.Option(False, "--json", help="Print the raw CDS Hooks response (for a folder: a "
                                                           "JSON array of {bundle, hook, response})."),
    ) -> None:
        """Run the rules on a fixture bundle and print the cards (a folder: one line per bundle).

        Exits 1 when a bundle cannot be read or its evaluation failed, 2 on a configuration error.
        """
        evaluate(bundle, hook, order, as_json)


def _register_optional_commands(app: typer.Typer | None = None) -> None:
    """Commands that live beside their subsystem (db, report, purge), on ``app`` (by default ``cli.app``)."""
    import importlib

    if app is None:
        app = command_line_app()  # made with them: the check below leaves it as it is

    for name in ("cds_service.store.cli",):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        if not any(c.name == "report" for c in app.registered_commands):
            module.register(app)


if __name__ == "__main__":
    main()
