"""The next standard step of the ladder and whether all its options are ruled out (decision 39).

The data is ``criteria/ladder_steps.yaml`` (the step of each stage and its options) and
``criteria/contraindications.yaml`` (the drugs each contraindication withholds). A contraindication
suppresses only its own drugs; the IVIG card "standard immunosuppression contraindicated" belongs only to a
patient whose every option of the next standard step is ruled out (contraindicated, or not tolerated before).
"""

from __future__ import annotations

from collections.abc import Iterable

from . import criteria
from .terminology import ingredient_class


def _withholding(drug: str) -> frozenset[str]:
    """Keys of the contraindications that withhold ``drug`` (an ingredient key; a class named in the data
    covers its ingredients)."""
    return criteria.withholding(frozenset(n for n in (drug, ingredient_class(drug)) if n))


def withholds_drug(contraindication: str, drug: str) -> bool:
    """The contraindication (a factor key) withholds ``drug`` (an ingredient key)."""
    return contraindication in _withholding(drug)


def next_options(stage: str) -> tuple[str, ...]:
    next_step, options = criteria.ladder_steps()
    step = next_step.get(stage)
    return options.get(step, ()) if step else ()


def options_left(stage: str, contraindications: Iterable[str], not_tolerated: Iterable[str] = ()) -> tuple[str, ...]:
    """The options of the stage's next step that no contraindication and no earlier intolerance rules out."""
    keys = set(contraindications)
    ruled_out = set(not_tolerated)
    return tuple(o for o in next_options(stage)
                 if o not in ruled_out and not keys & _withholding(o))


def next_step_ruled_out(stage: str, contraindications: Iterable[str], not_tolerated: Iterable[str] = ()) -> bool:
    """Every option of the next standard step is ruled out (decision 39); False for a stage without one."""
    return bool(next_options(stage)) and not options_left(stage, contraindications, not_tolerated)
