"""cds_service.body: the structural bounds check (depth and array length over the whole document)."""

import random

import orjson
import pytest

from cds_service.body import check_bounds, parse_json
from cds_service.errors import BadRequest


def walk(value, max_depth: int, max_array: int) -> None:
    """The test oracle: the same bounds by a plain walk of the parsed tree."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list) and depth > max_depth:
            raise BadRequest(f"JSON nesting deeper than {max_depth} levels is not accepted.")
        if isinstance(node, list) and len(node) > max_array:
            raise BadRequest(f"A JSON array longer than {max_array} items is not accepted.")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)


def bounds(value, max_depth, max_array) -> None:
    check_bounds(orjson.dumps(value), max_depth, max_array)


def outcome(fn, value, max_depth, max_array):
    try:
        fn(value, max_depth, max_array)
    except BadRequest as exc:
        return "deep" if "nesting" in str(exc) else "array"
    return "ok"


def nested(depth):
    doc: dict = {}
    for i in range(depth - 1):
        doc = {"a": [doc]} if i % 2 else {"a": doc}
    return doc


def test_depth_limit_counts_every_container_level():
    doc = {"a": {"b": [{"c": []}]}}  # 5 containers deep: the root is level 1, an empty array counts
    bounds(doc, max_depth=5, max_array=10)
    with pytest.raises(BadRequest, match="deeper than 4"):
        bounds(doc, max_depth=4, max_array=10)


def test_array_limit_anywhere_in_the_document():
    doc = {"x": [{"y": {"z": list(range(11))}}]}
    bounds(doc, max_depth=10, max_array=11)
    with pytest.raises(BadRequest, match="longer than 10"):
        bounds(doc, max_depth=10, max_array=10)
    with pytest.raises(BadRequest, match="longer than 3"):
        bounds([1, 2, 3, 4], max_depth=10, max_array=3)  # the root itself


def test_scalars_and_strings_that_look_like_json_do_not_count():
    doc = {"text": "[[[[[[[[{{{{", "n": 1, "f": 1.5, "t": True, "none": None, "long": "x" * 10_000}
    bounds(doc, max_depth=1, max_array=1)


def test_same_verdict_as_the_tree_walk_on_random_documents():
    rng = random.Random(11)

    def value(depth):
        r = rng.random()
        if depth > 8 or r < 0.3:
            return rng.choice([0, "s", None, 2.5, False])
        if r < 0.65:
            return [value(depth + 1) for _ in range(rng.randint(0, 6))]
        return {str(i): value(depth + 1) for i in range(rng.randint(0, 5))}

    for _ in range(3000):
        doc = {"r": value(0)}
        max_depth, max_array = rng.randint(1, 10), rng.randint(1, 7)
        new, old = outcome(bounds, doc, max_depth, max_array), outcome(walk, doc, max_depth, max_array)
        # the same documents pass; one that breaks both limits may report either violation first
        assert (new == "ok") == (old == "ok"), (doc, max_depth, max_array)


def test_parse_json_refuses_too_deep_and_too_long_with_400():
    with pytest.raises(BadRequest) as exc:
        parse_json(orjson.dumps({"a": [[[[{}]]]]}), max_depth=4, max_array=10)
    assert exc.value.status == 400
    with pytest.raises(BadRequest):
        parse_json(orjson.dumps({"a": list(range(6))}), max_depth=4, max_array=5)
    assert parse_json(orjson.dumps({"a": list(range(5))}), max_depth=4, max_array=5) == {"a": [0, 1, 2, 3, 4]}


def test_very_deep_document_is_refused_without_recursion():
    with pytest.raises(BadRequest, match="deeper than 64"):
        check_bounds(b'{"a":' * 5_000 + b"1" + b"}" * 5_000, max_depth=64, max_array=20_000)


# --------------------------------------------------------------------------- the raw-bytes check
_TRICKY = ['[', ']', '{', '}', ',', '"', '\\', '\\"', '\\\\', '"]', '[\\"', '\\\\"', 'é', '\u2028', '\x00', ':', ' ']


def raw_outcome(raw: bytes, max_depth: int, max_array: int) -> str:
    """The verdict parse_json reaches from the raw bytes."""
    try:
        parse_json(raw, max_depth=max_depth, max_array=max_array)
    except BadRequest as exc:
        return "deep" if "nesting" in str(exc) else "array"
    return "ok"


def test_raw_check_agrees_with_the_tree_walk_whatever_the_strings_and_spacing():
    """Strings full of brackets, quotes, commas and escapes, pretty-printed or compact: same verdicts."""
    import json

    rng = random.Random(5)

    def text():
        return "".join(rng.choice(_TRICKY) for _ in range(rng.randint(0, 6)))

    def value(depth):
        r = rng.random()
        if depth > 9 or r < 0.35:
            return rng.choice([0, text(), None, 2.5, False, text()])
        if r < 0.65:
            return [value(depth + 1) for _ in range(rng.randint(0, 6))]
        return {text() + str(i): value(depth + 1) for i in range(rng.randint(0, 5))}

    for n in range(3000):
        doc = {"r": value(0), text(): text()}
        raw = orjson.dumps(doc) if n % 2 else json.dumps(doc, indent=rng.choice([None, 1, 2]),
                                                         ensure_ascii=bool(n % 3)).encode()
        max_depth, max_array = rng.randint(1, 11), rng.randint(1, 40)
        got, want = raw_outcome(raw, max_depth, max_array), outcome(walk, doc, max_depth, max_array)
        assert (got == "ok") == (want == "ok"), (raw, max_depth, max_array)
        if want == "deep" and got != "ok":
            assert got == "deep" or outcome(walk, doc, 99, max_array) == "array"


def test_an_over_long_array_is_found_among_many_commas_elsewhere():
    """Enough commas in the document that some array could be too long: each array is measured."""
    many = {"a": list(range(30)), "b": list(range(30)), "c": [{"x": 1, "y": 2}] * 30}
    check_bounds(orjson.dumps(many), 64, 40)
    with pytest.raises(BadRequest, match="longer than 40"):
        parse_json(orjson.dumps(dict(many, d=[[list(range(41))]])), max_depth=64, max_array=40)
    with pytest.raises(BadRequest, match="longer than 40"):
        parse_json(orjson.dumps({"a": list(range(41))}), max_depth=64, max_array=40)


def test_an_over_long_array_of_objects_is_found_once_its_items_are_reduced():
    """The items of a long array of objects show as commas only once the objects are removed; the counting
    stops looking for long arrays only when too few commas are left for one."""
    items = [{"x": 1, "y": [1, 2]} for _ in range(41)]
    with pytest.raises(BadRequest, match="longer than 40"):
        parse_json(orjson.dumps({"a": {"b": items}}), max_depth=64, max_array=40)
    check_bounds(orjson.dumps({"a": {"b": items[:40]}}), 64, 40)


def test_the_random_documents_cross_the_many_commas_case_both_ways():
    """The oracle test above only means something if both ways through the check are taken."""
    text = orjson.dumps({"a": list(range(5)), "b": [list(range(3))]})
    assert text.count(b",") >= 5  # the measuring way at max_array 5 ...
    assert outcome(lambda v, d, a: check_bounds(text, d, a), None, 10, 5) == "ok"
    assert outcome(lambda v, d, a: check_bounds(text, d, a), None, 10, 50) == "ok"  # ... and the counting way
    assert outcome(lambda v, d, a: check_bounds(text, d, a), None, 10, 4) == "array"


def test_deep_nesting_hidden_behind_closing_brackets_in_a_string_is_refused():
    # an attacker's "]]]]" inside a string must not cancel real nesting in the raw check
    doc = {"x": "]]]]]]]]}}}}}}}}", "y": nested(10)}
    with pytest.raises(BadRequest, match="deeper than 8"):
        parse_json(orjson.dumps(doc), max_depth=8, max_array=100)
    escaped = b'{"x": "\\\\\\"]]]]]]]]", "y": ' + orjson.dumps(nested(10)) + b"}"
    assert orjson.loads(escaped)["x"] == '\\"]]]]]]]]'
    with pytest.raises(BadRequest, match="deeper than 8"):
        parse_json(escaped, max_depth=8, max_array=100)


# ------------------------------------------------------------------------------ a body that never arrives
def _asgi_post(app, messages, *, gap: float = 0.0):
    """POST a hook call to ``app`` with the given receive messages (a gap before each); the status sent."""
    import asyncio

    sent: list[dict] = []

    async def receive():
        if gap:
            await asyncio.sleep(gap)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/cds-services/neurosarcoidosis-order-select",
             "raw_path": b"/cds-services/neurosarcoidosis-order-select", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "scheme": "http", "http_version": "1.1"}

    async def run():
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
    asyncio.run(run())
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def _app(tmp_path):
    from cds_service.app import create_app
    from cds_service.config import Settings

    return create_app(Settings(_env_file=None, data_dir=tmp_path, trusted_issuers={}, database_url=None))


def test_a_client_gone_before_its_body_arrived_is_a_refused_request_not_a_server_error(tmp_path, capfd):
    status = _asgi_post(_app(tmp_path), [{"type": "http.request", "body": b'{"hook": ', "more_body": True},
                                         {"type": "http.disconnect"}])
    assert status == 499
    err = capfd.readouterr().err
    assert "unhandled_error" not in err and "request_refused" in err


def test_a_body_still_incomplete_after_the_deadline_is_refused_408(tmp_path, monkeypatch):
    from cds_service import body

    monkeypatch.setattr(body, "BODY_SECONDS", 0.3)
    drip = [{"type": "http.request", "body": b" ", "more_body": True} for _ in range(50)]
    assert _asgi_post(_app(tmp_path), drip, gap=0.05) == 408
