"""Which card opened the timeline, from the launch's ``appContext``, and what on the timeline it is about.

``appContext`` comes back from the EHR in the token response. It is only a hint and it is untrusted: it
is used only when it names, exactly, a rule this service has a card for; anything else is ignored (the
timeline is then drawn without a highlight). Oracle Health does not pass ``appContext`` at all.
"""

from __future__ import annotations

import re

from cds_service.timeline.model import Focus

# Rule id prefix -> (how the card family is named, the rows of the timeline it is about). Longest prefix wins.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "stage.": ("Treatment ladder", ("events", "glucocorticoid", "second-line", "anti-tnf")),
    "ladder.": ("Treatment ladder", ("second-line",)),
    "ivig.indication.": ("IVIG may be considered", ("events", "immune-globulin", "glucocorticoid", "second-line")),
    "ivig.safety.": ("IVIG safety", ("immune-globulin",)),
    "ivig.safety.renal": ("IVIG safety", ("creatinine", "egfr", "immune-globulin")),
    "ivig.dose": ("IVIG dose", ("weight", "immune-globulin")),
}
MAX_APP_CONTEXT = 200


def _words(rule_id: str, prefix: str) -> str:
    rest = rule_id[len(prefix):].strip(".-") or rule_id.rsplit(".", 1)[-1]
    words = rest.replace("-", " ").replace(".", " ").split()
    return " ".join(w.upper() if re.fullmatch(r"s\d+[a-z]?", w) else w for w in words)


def focus_for(app_context: str | None, known_rules: frozenset[str] | set[str]) -> Focus | None:
    """The :class:`Focus` for a valid ``appContext`` (a known rule id, or ``rule=<id>``), else None."""
    if not isinstance(app_context, str) or not app_context or len(app_context) > MAX_APP_CONTEXT:
        return None
    rule_id = app_context.strip().removeprefix("rule=")
    if rule_id not in known_rules:
        return None
    prefix = max((p for p in FAMILIES if rule_id.startswith(p)), key=len, default=None)
    if prefix is None:
        return Focus(rule_id, rule_id, ())
    family, sections = FAMILIES[prefix]
    words = _words(rule_id, prefix if prefix.endswith(".") else prefix.rsplit(".", 1)[0] + ".")
    return Focus(rule_id, f"{family}: {words}" if words else family, sections)
