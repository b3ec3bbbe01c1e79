"""The modules of cds_service import each other without a circle (every import counted, also those inside
functions), so each part can be read, tested and run without the parts above it: the CLI and the preview reach
the clinical engine without the web application, and the engine reaches nothing of the service."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cds_service"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def executed(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """module -> the cds_service modules it imports (a package's ``__init__`` stands for the package)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in executed(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
                targets.update(submodules)  # `from pkg import module` needs the module, not pkg's own code
                if len(submodules) < len(node.names):
                    targets.add(base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "cds_service.app" in graph["cds_service.cli"]  # imported inside served_app()
    assert "cds_service.clinical.markup" in graph["cds_service.clinical.engine"]  # `from . import markup`


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_the_cli_and_the_preview_reach_the_engine_without_the_web_application():
    graph = import_graph()
    for start in ("cds_service.evaluate", "cds_service.preview", "cds_service.response"):
        reached = reaches(graph, start)
        assert "cds_service.clinical.engine" in reached
        assert "cds_service.app" not in reached, start


# Loaded by no part of creating the served application and answering a hook call from its prefetch (auth off):
# each is loaded when something else asks for it (the audit store after the first answer, a FHIR fallback call,
# a signed token, the OpenAPI page, `cds-service evaluate`), and each would add to every start.
HEAVY_MODULES = ("fhir.resources", "fhir_core", "sqlalchemy", "alembic", "aiosqlite", "psycopg", "matplotlib",
                 "jwt", "cryptography", "redis", "markdown_it", "rich", "pygments", "httpx", "pydantic.v1",
                 "websockets")

_FIRST_CALL = r"""
import asyncio, json, sys

from cds_service import cli

cli.configured_settings()  # what `cds-service serve` does first: every setting checked
app = cli.served_app()
body = open(sys.argv[1], "rb").read()


async def first_call():
    startup, sent = asyncio.Queue(), asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, sent.put))
    assert (await sent.get())["type"] == "lifespan.startup.complete"
    replies = []
    received = []

    async def receive():
        if received:
            await asyncio.sleep(3600)
        received.append(1)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        replies.append(message)

    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
               "scheme": "http", "path": "/cds-services/neurosarcoidosis-order-select", "raw_path": b"",
               "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
               "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {}}, receive, send)
    cards = json.loads(b"".join(m.get("body", b"") for m in replies if m["type"] == "http.response.body"))["cards"]
    # read before anything else runs: the audit store opens (SQLAlchemy) only after this answer
    return replies[0]["status"], len(cards), sorted(sys.modules)


status, cards, modules = asyncio.run(first_call())
print(json.dumps({"status": status, "cards": cards, "modules": modules}))
"""


def test_the_first_hook_call_loads_no_heavy_module(tmp_path):
    """Start-up time is import time: creating the served application and answering one hook call (in a fresh
    interpreter, so this process's own imports hide nothing) loads none of HEAVY_MODULES."""
    import json
    import os
    import subprocess
    import sys

    from cds_service.evaluate import build_request

    bundle = json.loads((PACKAGE.parent / "fixtures" / "fhir" / "02-s1-conduction-block-ivig.json").read_text())
    request = tmp_path / "request.json"
    request.write_text(json.dumps(build_request(bundle, "order-select")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run([sys.executable, "-c", _FIRST_CALL, str(request)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["status"] == 200 and answer["cards"] >= 1
    loaded = set(answer["modules"])
    heavy = sorted(m for m in HEAVY_MODULES if m in loaded or any(n.startswith(m + ".") for n in loaded))
    assert heavy == []


def test_the_served_app_documents_its_api_as_create_app_does(tmp_path):
    """`cds-service serve` imports FastAPI with its OpenAPI models built on first use (cli.import_fastapi): the
    document it serves is the one an application made by create_app serves (each in a fresh interpreter)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATA_DIR"] = str(tmp_path / "data")
    documents = []
    for make in ("from cds_service.cli import served_app as make", "from cds_service.app import create_app as make"):
        code = (f"import sys, orjson\n{make}\napp = make()\n"
                "sys.stdout.buffer.write(orjson.dumps(app.openapi(), option=orjson.OPT_SORT_KEYS))")
        result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        documents.append(result.stdout)
    assert documents[0] == documents[1]
    assert b'"/cds-services/{service_id}"' in documents[0]


_SERVE = r"""
import json, sys

import uvicorn

uvicorn.run = lambda *args, **kwargs: None  # everything `cds-service serve` does before uvicorn takes over
from cds_service.cli import main

try:
    main(["serve", "--host", "127.0.0.1", "--port", sys.argv[1], "--workers", "1"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_serve_with_its_usual_arguments_loads_no_typer(tmp_path):
    """`cds-service serve --host H --port N` reads its arguments itself: Typer (and the pydantic validators it
    builds for each parameter) loads only for the other commands, help and mistakes (in a fresh interpreter).
    click loads with uvicorn, whose package imports its own command line."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run([sys.executable, "-c", _SERVE, str(port)], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["code"] == 0
    loaded = [m for m in answer["modules"] if m.split(".")[0] == "typer"]
    assert loaded == []
