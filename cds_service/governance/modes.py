"""Site rule modes: which rules show their cards (``on``), run silently (``shadow``) or not at all (``off``).

The file is YAML, named by ``CDS_RULES_FILE`` and read once at start (a restart applies a change)::

    default: on                       # rules not listed (on unless said otherwise)
    rules:
      ivig.safety.hyperviscosity: shadow
      ivig.indication.*: shadow       # every rule id that starts with "ivig.indication."
      ladder.mtx-frequency: off

An exact rule id wins over a ``prefix.*`` pattern. Unquoted ``on``/``off`` are YAML booleans; both are
understood. Any mistake (unknown rule, unknown mode, a pattern that matches nothing) is one line at start.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds_service.clinical.rules import RULE_IDS
from cds_service.models import RULE_ID_EXTENSION

MODES = ("on", "shadow", "off")


class RuleModesError(ValueError):
    """The rules file cannot be used; the message is one line saying why."""


@dataclass(frozen=True)
class RuleModes:
    modes: Mapping[str, str]  # every rule id of the service -> "on" | "shadow" | "off"
    source: str | None = None  # the file they came from (None: every rule on)
    off: frozenset[str] = field(init=False)
    shadow: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "off", frozenset(r for r, m in self.modes.items() if m == "off"))
        object.__setattr__(self, "shadow", frozenset(r for r, m in self.modes.items() if m == "shadow"))

    def mode(self, rule_id: str) -> str:
        return self.modes.get(rule_id, "on")  # a rule this table does not know (the error card) shows

    def split(self, cards: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """(cards to return, shadow cards to audit only)."""
        if not self.shadow:
            return list(cards), []
        shown, silent = [], []
        for card in cards:
            rule = (card.extension or {}).get(RULE_ID_EXTENSION)
            (silent if rule in self.shadow else shown).append(card)
        return shown, silent

    def by_mode(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {m: [] for m in MODES}
        for rule, mode in self.modes.items():
            out[mode].append(rule)
        return out


ALL_ON = RuleModes({r: "on" for r in RULE_IDS})


def _mode(value: Any, where: str) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    if isinstance(value, str) and value.strip().lower() in MODES:
        return value.strip().lower()
    raise RuleModesError(f"{where}: mode {value!r} is not one of on, shadow, off")


def parse_rule_modes(doc: Any, rule_ids: Iterable[str] = RULE_IDS, source: str | None = None) -> RuleModes:
    rule_ids = tuple(rule_ids)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise RuleModesError("the top level must be a mapping with 'rules' (and optionally 'default')")
    unknown_keys = sorted(set(doc) - {"default", "rules"})
    if unknown_keys:
        raise RuleModesError(f"unknown key {unknown_keys[0]!r} (expected 'default' and 'rules')")
    default = _mode(doc.get("default", "on"), "default")
    listed = doc.get("rules") or {}
    if not isinstance(listed, dict):
        raise RuleModesError("'rules' must map rule ids to on, shadow or off")
    modes = dict.fromkeys(rule_ids, default)
    exact: dict[str, str] = {}
    for key, value in listed.items():
        key = str(key)
        mode = _mode(value, f"rule {key!r}")
        if key.endswith(".*"):
            matched = [r for r in rule_ids if r.startswith(key[:-1])]
            if not matched:
                raise RuleModesError(f"pattern {key!r} matches no rule of this service (`cds-service rules` "
                                     "lists them)")
            for rule in matched:
                modes[rule] = mode
        elif key in modes:
            exact[key] = mode
        else:
            raise RuleModesError(f"{key!r} is not a rule of this service (`cds-service rules` lists them)")
    modes.update(exact)
    return RuleModes(modes, source)


def load_rule_modes(path: str | Path | None) -> RuleModes:
    """The modes in ``path`` (every rule on without a file); :class:`RuleModesError` with one line if unusable."""
    if not path:
        return ALL_ON
    import yaml

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleModesError(f"cannot read {file} ({(exc.strerror or type(exc).__name__).lower()})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise RuleModesError(f"{file} is not valid YAML{line}") from None
    try:
        return parse_rule_modes(doc, source=str(file))
    except RuleModesError as exc:
        raise RuleModesError(f"{file}: {exc}") from None


@functools.lru_cache(maxsize=4)
def cached_rule_modes(path: str | Path | None) -> RuleModes:
    """:func:`load_rule_modes`, read once per path (the CLI and the preview endpoint; checked at start)."""
    return load_rule_modes(path)
