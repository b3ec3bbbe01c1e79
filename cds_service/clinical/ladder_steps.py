"""The next standard step of the ladder and the drugs a contraindication withholds (decision 39).

The data is ``cds_service/data/ladder_steps.yaml``. A contraindication suppresses only the drugs listed for
it; the IVIG card "standard immunosuppression contraindicated" belongs only to a patient whose every option
of the next standard step is ruled out (contraindicated, or not tolerated before).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .resources import data_path
from .terminology import INGREDIENTS


@dataclass(frozen=True, slots=True)
class LadderSteps:
    next_step: dict[str, str]
    step_options: dict[str, tuple[str, ...]]
    withholds: dict[str, tuple[str, ...]]

    def drugs_withheld(self, contraindication: str) -> frozenset[str]:
        """Ingredient keys a contraindication rules out (a class name stands for all its ingredients)."""
        out: set[str] = set()
        for name in self.withholds.get(contraindication, ()):
            members = [i.key for i in INGREDIENTS if i.drug_class == name]
            out.update(members or [name])
        return frozenset(out)

    def withholds_drug(self, contraindication: str, ingredient: str) -> bool:
        return ingredient in self.drugs_withheld(contraindication)

    def next_options(self, stage: str) -> tuple[str, ...]:
        step = self.next_step.get(stage)
        return self.step_options.get(step, ()) if step else ()

    def options_left(self, stage: str, contraindications: Iterable[str], not_tolerated: Iterable[str] = ()
                     ) -> tuple[str, ...]:
        """The options of the stage's next step that no contraindication and no earlier intolerance rules out."""
        ruled_out = set(not_tolerated)
        for key in contraindications:
            ruled_out |= self.drugs_withheld(key)
        return tuple(o for o in self.next_options(stage) if o not in ruled_out)

    def next_step_ruled_out(self, stage: str, contraindications: Iterable[str],
                            not_tolerated: Iterable[str] = ()) -> bool:
        """Every option of the next standard step is ruled out (decision 39); False for a stage without one."""
        return bool(self.next_options(stage)) and not self.options_left(stage, contraindications, not_tolerated)


def _tuple_map(raw: Any) -> dict[str, tuple[str, ...]]:
    return {str(k): tuple(str(x) for x in (v or ())) for k, v in (raw or {}).items()}


@functools.lru_cache(maxsize=1)
def ladder_steps() -> LadderSteps:
    import yaml

    with data_path("data").joinpath("ladder_steps.yaml").open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    return LadderSteps({str(k): str(v) for k, v in (doc.get("next_step") or {}).items()},
                       _tuple_map(doc.get("step_options")), _tuple_map(doc.get("withholds")))
