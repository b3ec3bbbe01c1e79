"""The one registry of rules: id, group, the decision it implements, its card text, its predicate.

A rule's predicate reads the :class:`~.context.Context` and returns the card it fires (:class:`Fired`)
or None. Rules run in this order (cards of one indicator keep it). ``run_rules`` evaluates only the
groups asked for and never calls a rule that is off.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial

from ..facts import Facts
from ..stages import RUNGS, StageResult
from ..thresholds import Thresholds
from . import dose, ivig_indication, ivig_safety, ladder
from .context import Context, Fired

LADDER = "ladder"
IVIG_INDICATION = "ivig-indication"
IVIG_SAFETY = "ivig-safety"
GROUPS = (LADDER, IVIG_INDICATION, IVIG_SAFETY)


@dataclass(frozen=True)
class Rule:
    id: str  # stable: the card's rule id, its key in cards/*.yaml, and what feedback and governance name
    group: str
    decision: str  # the decision (docs/clinical/decisions.md) or knowledge section it implements
    check: Callable[[Context], Fired | None]

    @property
    def card(self) -> str:
        """The key of the card text in cards/*.yaml."""
        return self.id


def _stage_rule(rule_id: str, ctx: Context) -> Fired | None:
    """The stage card, when the patient's rung shows this rule's card."""
    fired = ladder.stage_card(ctx)
    return fired if fired is not None and fired.rule_id == rule_id else None


RULES: tuple[Rule, ...] = (
    Rule("ladder.mtx-frequency", LADDER, "A9", ladder.methotrexate_daily),
    *(Rule(r.rule_id, LADDER, "decisions 4-6", partial(_stage_rule, r.rule_id)) for r in RUNGS if r.rule_id),
    Rule("ladder.skipped-rung", LADDER, "decision 27", ladder.skipped_rung),
    Rule("ladder.order-contraindicated", LADDER, "decision 39", ladder.order_contraindicated),
    Rule("ivig.indication.steroid-resistant", IVIG_INDICATION, "decision 7", ivig_indication.steroid_resistant),
    Rule("ivig.indication.decompensated", IVIG_INDICATION, "decision 7", ivig_indication.decompensated),
    Rule("ivig.indication.sfn", IVIG_INDICATION, "decision 7", ivig_indication.small_fiber),
    Rule("ivig.indication.conduction-block", IVIG_INDICATION, "decisions 7 and 42", ivig_indication.conduction_block),
    Rule("ivig.indication.immunosuppression-contraindicated", IVIG_INDICATION, "decisions 7 and 39",
         ivig_indication.immunosuppression_contraindicated),
    Rule("ivig.safety.renal", IVIG_SAFETY, "decisions 8 and 36", ivig_safety.renal),
    Rule("ivig.safety.renal-baseline-missing", IVIG_SAFETY, "decisions 8 and 36", ivig_safety.renal_baseline_missing),
    Rule("ivig.safety.thrombosis", IVIG_SAFETY, "decisions 9 and 38", ivig_safety.thrombosis),
    Rule("ivig.safety.hyperviscosity", IVIG_SAFETY, "decision 9", ivig_safety.hyperviscosity),
    Rule("ivig.safety.iga", IVIG_SAFETY, "decisions 10, 37 and 42", ivig_safety.iga_deficiency),
    Rule("ivig.safety.prior-reaction", IVIG_SAFETY, "decisions 10 and 37", ivig_safety.prior_reaction),
    Rule("ivig.safety.heart-failure-volume", IVIG_SAFETY, "decisions 12 and 34", ivig_safety.heart_failure_volume),
    Rule("ivig.dose", IVIG_SAFETY, "decisions 11, 34-36 and 41", dose.dose),
    Rule("ivig.dose.weight-missing", IVIG_SAFETY, "decisions 11 and 36", dose.weight_missing),
)
RULE_IDS: tuple[str, ...] = tuple(r.id for r in RULES)
RULE_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def default_groups(hook: str) -> tuple[str, ...]:
    """Every group: each rule decides for itself which hooks it answers (decisions 2 and 6)."""
    return GROUPS


def run_rules(facts: Facts, stage: StageResult, hook: str, th: Thresholds, *,
              groups: Collection[str] | None = None, off: Collection[str] = frozenset()) -> list[Fired]:
    """The cards that fire, in registry order. ``groups``: the rule groups to evaluate (None: the hook's
    default); ``off``: rule ids never evaluated."""
    wanted = frozenset(default_groups(hook) if groups is None else groups)
    ctx = Context(facts, stage, hook, th)
    out: list[Fired] = []
    for rule in RULES:
        if rule.group in wanted and rule.id not in off:
            fired = rule.check(ctx)
            if fired is not None:
                out.append(fired)
    return ivig_indication.one_ivig_offer(out)
