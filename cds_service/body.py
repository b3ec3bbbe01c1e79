"""Reading a JSON request body safely: size limit, one parse with orjson, structural bounds."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from cds_service.errors import BadRequest, PayloadTooLarge


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without reading the rest into memory."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        except ValueError as exc:
            raise BadRequest("Content-Length header is not a number.") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def check_bounds(value: Any, max_depth: int, max_array: int) -> None:
    """Refuse documents nested deeper than ``max_depth`` or with an array longer than ``max_array``.

    Iterative (no recursion limit to hit) and only descends into containers. Level by level: the
    containers of one depth are kept as two lists (objects, arrays), so the depth is a counter and the
    loop over every value does one ``type()`` and one or two identity tests, with no per-container
    ``(node, depth)`` tuple. About 30 % faster than a stack walk (bench/engine_micro.py); a scan of the
    raw bytes (strings stripped with replace/translate/split, nesting by repeated regex collapse) and
    itertools pipelines were measured slower than either.
    """
    t = type(value)
    if t is dict:
        dicts, lists = [value], []
    elif t is list:
        dicts, lists = [], [value]
    else:  # not a container: what the stack walk did with it (parse_json only passes objects)
        _check_bounds_walk(value, max_depth, max_array)
        return
    depth = 1
    while dicts or lists:
        if depth > max_depth:
            raise BadRequest(f"JSON nesting deeper than {max_depth} levels is not accepted.")
        next_dicts: list[dict[str, Any]] = []
        next_lists: list[list[Any]] = []
        add_dict, add_list = next_dicts.append, next_lists.append
        for node in dicts:
            for v in node.values():
                t = type(v)
                if t is dict:
                    add_dict(v)
                elif t is list:
                    add_list(v)
        for node in lists:
            if len(node) > max_array:
                raise BadRequest(f"A JSON array longer than {max_array} items is not accepted.")
            for v in node:
                t = type(v)
                if t is dict:
                    add_dict(v)
                elif t is list:
                    add_list(v)
        dicts, lists = next_dicts, next_lists
        depth += 1


def _check_bounds_walk(value: Any, max_depth: int, max_array: int) -> None:
    """The stack walk check_bounds used to be; kept for a root that is not a container."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            raise BadRequest(f"JSON nesting deeper than {max_depth} levels is not accepted.")
        if type(node) is dict:
            for v in node.values():
                t = type(v)
                if t is dict or t is list:
                    push((v, depth + 1))
        else:  # list
            if len(node) > max_array:
                raise BadRequest(f"A JSON array longer than {max_array} items is not accepted.")
            for v in node:
                t = type(v)
                if t is dict or t is list:
                    push((v, depth + 1))


def parse_json(raw: bytes, *, max_depth: int, max_array: int) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("Request body is empty; a JSON object is required.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc.msg} (at character {exc.pos}).") from exc
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object.")
    check_bounds(data, max_depth, max_array)
    return data


async def read_json(request: Request, *, limit: int, max_depth: int, max_array: int) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise BadRequest(f"Content-Type must be application/json, not {ctype.split(';')[0]!r}.",
                         status=415, code="not-supported")
    return parse_json(await read_limited(request, limit), max_depth=max_depth, max_array=max_array)
