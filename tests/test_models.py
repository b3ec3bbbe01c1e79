import pytest
from pydantic import ValidationError

from cds_service.models import Card, CDSResponse, FeedbackItem, Source, Suggestion, dump


def card(**kw):
    base = {"summary": "Check renal function before IVIG", "indicator": "warning", "source": Source(label="x")}
    base.update(kw)
    return Card(**base)


def test_summary_must_be_under_140_characters():
    card(summary="x" * 139)
    with pytest.raises(ValidationError):
        card(summary="x" * 140)


def test_suggestions_require_selection_behavior():
    with pytest.raises(ValidationError, match="selectionBehavior"):
        card(suggestions=[Suggestion(label="Order creatinine")])
    ok = card(suggestions=[Suggestion(label="Order creatinine")], selectionBehavior="any")
    assert ok.suggestions[0].uuid


def test_override_reasons_need_display():
    with pytest.raises(ValidationError):
        card(overrideReasons=[{"code": "a", "system": "http://x"}])


def test_indicator_is_closed():
    with pytest.raises(ValidationError):
        card(indicator="hard-stop")


def test_dump_omits_nulls_and_empties():
    out = dump(CDSResponse(cards=[card(links=[], detail="")]))
    c = out["cards"][0]
    assert "links" not in c and "detail" not in c and "suggestions" not in c
    assert c["uuid"] and c["source"] == {"label": "x"}
    assert dump(CDSResponse()) == {"cards": []}


def test_create_action_needs_a_resource():
    with pytest.raises(ValidationError):
        Suggestion(label="x", actions=[{"type": "create", "description": "d"}])


def test_feedback_accepts_epic_plural_and_extension():
    item = FeedbackItem.model_validate({
        "card": "c1", "outcome": "overridden", "outcomeTimestamp": "2022-05-19T19:44:04Z",
        "overrideReasons": {"extension": {
            "com.epic.cdshooks.feedback.overrideReason.reasonCategory": "45",
            "com.epic.cdshooks.feedback.overrideReason.reasonDisplay": "Does not meet criteria"}},
    })
    assert item.reason_code() == ("45", "Does not meet criteria")


def test_feedback_accepted_needs_suggestions_and_valid_time():
    with pytest.raises(ValidationError):
        FeedbackItem.model_validate({"card": "c", "outcome": "accepted", "outcomeTimestamp": "2022-05-19T19:44:04Z"})
    with pytest.raises(ValidationError):
        FeedbackItem.model_validate({"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"})
