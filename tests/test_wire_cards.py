"""The wire models stay the contract: every card the request path renders from its compiled templates
(``models.WireCard``, never validated on the way out) is checked here against ``models.CDSResponse``.

For every fixture (both order hooks, timeline links on) and every benchmark request, the response is made
as a hook call makes it (``response.answer``), and its bytes must be

* a valid ``CDSResponse`` (and each card a valid ``Card``), and
* exactly the bytes the wire models give for the same cards: ``orjson.dumps(dump(CDSResponse(...)))``.

So a template, a renderer or ``WireCard.wire`` that drifted from the models (a key order, an empty field, a
missing required field, a summary over 139 characters) fails here, with the fixture named.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gen  # noqa: E402
from cds_service.evaluate import build_request, service_for  # noqa: E402
from cds_service.hooks import evaluation_time, parse_call  # noqa: E402
from cds_service.models import (  # noqa: E402
    RULE_ID_EXTENSION,
    Card,
    CDSResponse,
    WireCard,
    dump,
    encode_response,
)
from cds_service.response import answer, evaluation_failed_card  # noqa: E402
from cds_service.smart.links import for_call  # noqa: E402
from cds_service.sources.gather import GatherPolicy, gather, prefetch_only  # noqa: E402

FIXTURES = sorted((ROOT / "fixtures" / "fhir").glob("*.json"))
HOOKS = ("order-select", "order-sign")
# the timeline link on every linked card, as with a SMART client configured
LINKS = SimpleNamespace(smart_clients={"https://ehr.example": {}}, auth_enabled=False,
                        smart_links_unauthenticated=True, public_base_url="https://cds.example", host="h", port=1)


def _answer(request: dict, hook: str):
    service = service_for(hook)
    call = parse_call(service, request)
    record = asyncio.run(gather(call, prefetch_only(call), GatherPolicy(deadline_seconds=1.0)))
    now = evaluation_time(request.get("extension"))
    if now is not None:
        record.now = now
    links = lambda cards: for_call(cards, LINKS, None, None)  # noqa: E731
    return answer(record, service, call.hook_instance, links)


def assert_wire_models_agree(cards: list[WireCard], body: bytes) -> None:
    """``body`` is a valid CDSResponse, made of ``cards``, byte for byte what the wire models make of them."""
    assert all(isinstance(c, WireCard) for c in cards)
    decoded = orjson.loads(body)
    validated = CDSResponse.model_validate(decoded)  # raises on any departure from the spec models
    assert orjson.dumps(dump(validated)) == body
    assert orjson.dumps(dump(CDSResponse(cards=[c.validated() for c in cards]))) == body
    for card, wire in zip(cards, decoded["cards"], strict=True):
        assert dump(Card.model_validate(card.wire())) == wire


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
@pytest.mark.parametrize("hook", HOOKS)
def test_every_fixture_card_is_what_the_wire_models_make(path: Path, hook: str) -> None:
    result = _answer(build_request(json.loads(path.read_text(encoding="utf-8")), hook), hook)
    assert result.body == encode_response(result.cards)
    assert_wire_models_agree(result.cards, result.body)


@pytest.mark.skipif(not any(gen.SYNTHEA_DIR.glob("*.json")), reason=f"no Synthea R4 bundles in {gen.SYNTHEA_DIR}")
@pytest.mark.parametrize("shape", gen.SHAPES)
@pytest.mark.parametrize("n", [10, 100, 1000])
def test_every_benchmark_card_is_what_the_wire_models_make(shape: str, n: int) -> None:
    request = gen.relapse_request(n) if shape == "relapse" else gen.build_request(n)
    result = _answer(orjson.loads(orjson.dumps(request)), "order-select")
    assert result.cards, "the benchmark request answers cards"
    assert_wire_models_agree(result.cards, result.body)


def test_linked_cards_carry_the_timeline_link_as_a_smart_link() -> None:
    linked = [c for p in FIXTURES[:12] for c in _answer(build_request(json.loads(p.read_text()), "order-select"),
                                                        "order-select").cards
              if c.extension[RULE_ID_EXTENSION].startswith(("stage.", "ivig."))]
    assert linked
    for card in linked:
        link = card.validated().links[-1]
        assert (link.type, link.appContext) == ("smart", card.extension[RULE_ID_EXTENSION])


def test_the_failure_card_and_an_empty_answer() -> None:
    failed = evaluation_failed_card()
    assert_wire_models_agree([failed], encode_response([failed]))
    assert encode_response([]) == orjson.dumps(dump(CDSResponse(cards=[]))) == b'{"cards":[]}'


def test_wire_card_round_trips_a_model_card() -> None:
    card = Card(summary="s", detail="", indicator="info", source={"label": "x", "url": ""},
                suggestions=[], selectionBehavior="any", links=[], extension={})
    wire = WireCard.of(card)
    assert wire.wire() == dump(card) and wire.validated() == card
    assert_wire_models_agree([wire], encode_response([wire]))
