"""Text from the EHR is data, never markup: Markdown and HTML fed through every text field the rules quote
come out of the cards as literal text (rendered the way a GitHub-flavoured Markdown EHR renders them)."""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from cds_service.clinical.engine import evaluate
from tests.fhir_builders import (
    ATC,
    RXN,
    cc,
    dosage,
    draft,
    egfr,
    icd,
    med_statement,
    ns,
    patient,
    record,
    weight,
)

FRAGMENTS = [
    "[Confirm dose here](https://evil.example/phish)", "![](https://evil.example/pixel.png)", "**Dose verified**",
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "*x*", "_y_", "~~z~~", "`code`", "# Heading",
    "> quote", "- item", "1. item", "| a | b |\n|---|---|", "https://evil.example", "www.evil.example",
    "mail@evil.example", "<https://evil.example>", "[ref]: https://evil.example", "[ref]", "&lt;b&gt;", "\n\n",
    "\\", "---", "=== ", "<!-- c -->", "<a href='https://evil.example'>x</a>", "[x]: <https://e.x>",
]
hostile = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), min_size=1, max_size=6).map(
    lambda parts: "Product " + "".join(parts))

# What can carry a link, an image, HTML or emphasis from the input into the rendered card.
LIVE = {"link_open", "image", "html_inline", "html_block"}
STRUCTURE = ("strong_open", "em_open", "s_open", "heading_open", "blockquote_open", "bullet_list_open",
             "ordered_list_open", "table_open", "hr", "code_inline", "fence", "code_block")


@functools.lru_cache(maxsize=1)
def gfm() -> MarkdownIt:
    # raw HTML on and bare-URL linking as GitHub does it: the strictest reading an EHR may apply
    md = MarkdownIt("commonmark", {"html": True, "linkify": True}).enable(["table", "strikethrough", "linkify"])
    md.linkify.set({"fuzzy_link": False})
    return md


def tokens(text: str) -> list:
    out = []
    for tok in gfm().parse(text or ""):
        out.append(tok)
        out.extend(tok.children or ())
    return out


def structure(text: str) -> dict[str, int]:
    counts = dict.fromkeys(STRUCTURE, 0)
    for tok in tokens(text):
        if tok.type in counts:
            counts[tok.type] += 1
    return counts


def ivig_record(text: str):
    """Every text field the rules quote carries ``text``: the order's product, a Condition, a medication."""
    order = draft("ivig-1", cc(ATC, "J06BA02", text, text), dosage(30, "g", count=5, route="iv"))
    gc = med_statement("gc-1", cc(RXN, "312615", text, text), start_days=60)
    dm = icd("dm", "E11.9", text)
    dm["code"]["text"] = text
    return record(patient(), ns(), weight(70), egfr(48), gc, dm, drafts=[order])


def card_texts(card) -> list[str]:
    texts = [card.summary, card.detail or ""]
    texts += [s.label for s in card.suggestions or ()]
    return texts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=hostile)
def test_markdown_and_html_in_ehr_text_never_render_live(text):
    cards = evaluate(ivig_record(text), "order-select").cards
    baseline = {c.extension["org.neurosarcoidosis-cds.rule-id"]: c
                for c in evaluate(ivig_record("plain words"), "order-select").cards}
    assert cards
    for card in cards:
        rule = card.extension["org.neurosarcoidosis-cds.rule-id"]
        for field in card_texts(card):
            live = [t.type for t in tokens(field) if t.type in LIVE]
            assert not live, (rule, live, field)
        if rule in baseline:  # the same card with harmless text has the same Markdown structure
            assert structure(card.detail) == structure(baseline[rule].detail), rule
            assert structure(card.summary) == structure(baseline[rule].summary), rule


def test_the_reported_phishing_text_is_shown_literally_in_the_dose_card():
    text = ("IVIG [Confirm dose here](https://evil.example/phish) ![](https://evil.example/pixel.png) "
            "**Dose verified** <img src=x onerror=alert(1)>")
    cards = evaluate(ivig_record(text), "order-select").cards
    dose = next(c for c in cards if c.extension["org.neurosarcoidosis-cds.rule-id"].startswith("ivig.dose"))
    html = gfm().render(dose.detail)
    assert "Confirm dose here" in html and "<a " not in html and "<img" not in html
    assert "<strong>Dose verified" not in html


def test_validation_error_text_in_data_notes_is_escaped():
    from cds_service.clinical.engine import _add_data_notes
    from cds_service.models import Card, Source

    card = Card(summary="s", indicator="info", source=Source(label="x"))
    _add_data_notes([card], ["skipped Condition/x: input_value='[a](https://evil.example) <b>bold</b>'"])
    assert not [t for t in tokens(card.detail) if t.type in LIVE]


@pytest.mark.parametrize("hook_instance", ["[x](https://evil.example)", "<img src=x>", "hi-\x00-x"])
def test_hook_instance_never_reaches_a_card(client, hook_instance):
    from test_app import SELECT, hook_request

    body = hook_request()
    body["hookInstance"] = hook_instance
    resp = client.post(SELECT, json=body)
    assert resp.status_code == 200
    assert hook_instance not in resp.text and "evil.example" not in resp.text
