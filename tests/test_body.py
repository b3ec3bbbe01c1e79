"""cds_service.body: the structural bounds check (depth and array length over the whole document)."""

import random

import orjson
import pytest

from cds_service.body import _check_bounds_walk, check_bounds, parse_json
from cds_service.errors import BadRequest


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
    check_bounds(doc, max_depth=5, max_array=10)
    with pytest.raises(BadRequest, match="deeper than 4"):
        check_bounds(doc, max_depth=4, max_array=10)


def test_array_limit_anywhere_in_the_document():
    doc = {"x": [{"y": {"z": list(range(11))}}]}
    check_bounds(doc, max_depth=10, max_array=11)
    with pytest.raises(BadRequest, match="longer than 10"):
        check_bounds(doc, max_depth=10, max_array=10)
    with pytest.raises(BadRequest, match="longer than 3"):
        check_bounds([1, 2, 3, 4], max_depth=10, max_array=3)  # the root itself


def test_scalars_and_strings_that_look_like_json_do_not_count():
    doc = {"text": "[[[[[[[[{{{{", "n": 1, "f": 1.5, "t": True, "none": None, "long": "x" * 10_000}
    check_bounds(doc, max_depth=1, max_array=0)


def test_same_verdict_as_the_stack_walk_on_random_documents():
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
        max_depth, max_array = rng.randint(1, 10), rng.randint(0, 7)
        new, old = outcome(check_bounds, doc, max_depth, max_array), outcome(_check_bounds_walk, doc, max_depth,
                                                                           max_array)
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
    doc = nested(5_000)
    with pytest.raises(BadRequest, match="deeper than 64"):
        check_bounds(doc, max_depth=64, max_array=20_000)


# --------------------------------------------------------------------------- the raw-bytes check
_TRICKY = ['[', ']', '{', '}', ',', '"', '\\', '\\"', '\\\\', '"]', '[\\"', '\\\\"', 'é', '\u2028', '\x00', ':', ' ']


def raw_outcome(raw: bytes, max_depth: int, max_array: int) -> str:
    """The verdict parse_json reaches from the raw bytes (walk only when the raw check cannot decide)."""
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
        max_depth, max_array = rng.randint(1, 11), rng.randint(0, 40)
        got, want = raw_outcome(raw, max_depth, max_array), outcome(_check_bounds_walk, doc, max_depth, max_array)
        assert (got == "ok") == (want == "ok"), (raw, max_depth, max_array)
        if want == "deep" and got != "ok":
            assert got == "deep" or outcome(_check_bounds_walk, doc, 99, max_array) == "array"


def test_raw_check_decides_typical_requests_without_walking_the_tree():
    from cds_service.body import check_raw_bounds

    doc = {"prefetch": {"b": {"entry": [{"resource": {"id": str(i), "code": {"text": "a, [b] {c}"}}}
                                        for i in range(100)]}}}
    assert check_raw_bounds(orjson.dumps(doc), 64, 20_000) is True
    # so many commas that one array could be over the limit: the tree walk has to decide
    assert check_raw_bounds(orjson.dumps({"a": list(range(30)), "b": list(range(30))}), 64, 40) is False
    with pytest.raises(BadRequest, match="longer than 40"):
        parse_json(orjson.dumps({"a": list(range(41))}), max_depth=64, max_array=40)


def test_deep_nesting_hidden_behind_closing_brackets_in_a_string_is_refused():
    # an attacker's "]]]]" inside a string must not cancel real nesting in the raw check
    doc = {"x": "]]]]]]]]}}}}}}}}", "y": nested(10)}
    with pytest.raises(BadRequest, match="deeper than 8"):
        parse_json(orjson.dumps(doc), max_depth=8, max_array=100)
    escaped = b'{"x": "\\\\\\"]]]]]]]]", "y": ' + orjson.dumps(nested(10)) + b"}"
    assert orjson.loads(escaped)["x"] == '\\"]]]]]]]]'
    with pytest.raises(BadRequest, match="deeper than 8"):
        parse_json(escaped, max_depth=8, max_array=100)
