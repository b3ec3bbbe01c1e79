"""The rules: which cards fire, with which numbers and which facts.

Texts live in ``cards/*.yaml`` (rendered by :mod:`cds_service.clinical.cards`), the sentences the rules
insert in ``cards/_phrases.yaml``; thresholds in :mod:`cds_service.clinical.thresholds`; value sets,
risk factors and contraindications in ``clinical/criteria/``. A rule only decides *whether* its card
fires, *which variant*, the values for its templates, the facts it cites and which suggestions it offers.

``ladder`` (stage cards, A9), ``ivig_indication``, ``ivig_safety`` and ``dose`` hold the rules as named
predicates; ``registry`` lists them with their group and decision and runs them.
"""

from __future__ import annotations

from .context import Context, DosePlan, Fired, ivig_plan
from .registry import GROUPS, RULE_BY_ID, RULE_IDS, RULES, Rule, default_groups, run_rules

__all__ = ["GROUPS", "RULES", "RULE_BY_ID", "RULE_IDS", "Context", "DosePlan", "Fired", "Rule", "default_groups",
           "ivig_plan", "run_rules"]
