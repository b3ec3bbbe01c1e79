"""Feedback on cards (``POST /cds-services/{id}/feedback``) read into typed items, or a 400 saying what is wrong."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from cds_service.errors import BadRequest
from cds_service.hooks import describe
from cds_service.models import FeedbackItem, FeedbackRequest


def parse_feedback(data: dict[str, Any]) -> list[FeedbackItem]:
    try:
        return FeedbackRequest.model_validate(data).feedback
    except ValidationError as exc:
        raise BadRequest(f"Invalid feedback: {describe(exc)}.") from exc
