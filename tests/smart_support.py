"""Servers for the timeline tests: the test EHR on 127.0.0.2 and the service on 127.0.0.1 (cross-site), each
under uvicorn in a thread on a free port."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest

EHR_HOST = "127.0.0.2"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_alias_works(host: str = EHR_HOST) -> bool:
    try:
        free_port(host)
    except OSError:
        return False
    return True


@contextmanager
def serving(app, host: str, port: int | None = None):
    """``app`` under uvicorn on ``host`` (a free port); yields its base URL."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"the server on {host} did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
