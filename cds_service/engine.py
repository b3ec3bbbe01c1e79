"""PLACEHOLDER until the clinical engine lands (being written now): answers no cards."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Evaluation:
    cards: list = field(default_factory=list)
    stage: str = "S0"
    rule_ids: list = field(default_factory=list)


def evaluate(record, hook, *, thresholds=None) -> Evaluation:
    return Evaluation()


def warm_up() -> None:
    return None
