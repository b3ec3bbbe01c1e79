"""The alert-burden figures a CDS committee asks for, per rule and week, from the audit store's rows.

Definitions (also printed in the report):

* **Relevant orders**: for each hook call that answered (HTTP 200) on an order hook, the orders the rule
  could fire on: immune globulin orders for the IVIG safety and dose rules, ladder-drug and immune globulin
  orders for the stage, ladder and IVIG-indication rules (``orders`` in ``rule_inputs.yaml``).
* **Cards per 100 relevant orders**: cards of the rule returned in those calls x 100 / relevant orders;
  **shadow firings per 100** the same for the cards a rule in shadow mode computed but did not return.
* **Acceptance / override rate**: distinct cards accepted (overridden) / cards shown, with a 95 % Wilson
  score interval. Cards without feedback count in the denominator: an EHR that sends no feedback for a
  card that was read and ignored makes both rates lower bounds.
* **Weeks** start on Monday (UTC). A **version** of a rule is active from the time the service first ran
  with it until the next version (``cds_rule_version``; from its first card when the store has no record).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds_service.governance.versions import ORDER_KINDS

ORDER_HOOKS = ("order-select", "order-sign")
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None when n is 0)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def week_of(when: datetime) -> date:
    day = when.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def per_100(n: int, d: int) -> float | None:
    return round(100.0 * n / d, 2) if d else None


def rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


@dataclass
class Counts:
    """Cards and feedback of one rule over one slice (a week, a version, the whole period)."""

    relevant_orders: int = 0
    shown: int = 0
    shadow: int = 0
    accepted: int = 0
    overridden: int = 0

    @property
    def shown_per_100(self) -> float | None:
        return per_100(self.shown, self.relevant_orders)

    @property
    def shadow_per_100(self) -> float | None:
        return per_100(self.shadow, self.relevant_orders)

    @property
    def acceptance_rate(self) -> float | None:
        return rate(self.accepted, self.shown)

    @property
    def override_rate(self) -> float | None:
        return rate(self.overridden, self.shown)

    @property
    def acceptance_ci(self) -> tuple[float, float] | None:
        return wilson(self.accepted, self.shown)

    @property
    def override_ci(self) -> tuple[float, float] | None:
        return wilson(self.overridden, self.shown)

    def to_dict(self) -> dict[str, Any]:
        return {"relevant_orders": self.relevant_orders, "shown": self.shown, "shadow": self.shadow,
                "shown_per_100": self.shown_per_100, "shadow_per_100": self.shadow_per_100,
                "accepted": self.accepted, "overridden": self.overridden,
                "acceptance_rate": self.acceptance_rate, "override_rate": self.override_rate,
                "acceptance_ci": _ci(self.acceptance_ci), "override_ci": _ci(self.override_ci)}


def _ci(ci: tuple[float, float] | None) -> list[float] | None:
    return [round(ci[0], 4), round(ci[1], 4)] if ci else None


@dataclass
class VersionSlice:
    version: str
    start: datetime | None
    end: datetime | None
    changes: list[str] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)


@dataclass
class RuleBurden:
    rule: str
    mode: str
    orders: str  # which orders are relevant (rule_inputs.yaml)
    total: Counts = field(default_factory=Counts)
    weeks: dict[date, Counts] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)
    reason_displays: dict[str, str] = field(default_factory=dict)
    versions: list[VersionSlice] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "mode": self.mode, "orders": self.orders, "total": self.total.to_dict(),
                "weeks": {w.isoformat(): c.to_dict() for w, c in sorted(self.weeks.items())},
                "override_reasons": dict(self.reasons.most_common()),
                "versions": [{"version": v.version, "start": _iso(v.start), "end": _iso(v.end),
                              "changes": v.changes, **v.counts.to_dict()} for v in self.versions]}


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


@dataclass
class Burden:
    since: datetime | None
    until: datetime | None
    hooks: tuple[str, ...]
    weeks: list[date]
    calls: int
    calls_refused: int
    rules: list[RuleBurden]

    def rule(self, rule_id: str) -> RuleBurden:
        return next(r for r in self.rules if r.rule == rule_id)

    def to_dict(self) -> dict[str, Any]:
        return {"since": _iso(self.since), "until": _iso(self.until), "hooks": list(self.hooks),
                "weeks": [w.isoformat() for w in self.weeks], "calls": self.calls,
                "calls_refused": self.calls_refused, "rules": [r.to_dict() for r in self.rules]}


def relevant(kind: str | None, ladder_orders: int, ig_orders: int) -> int:
    if kind == "immune-globulin":
        return ig_orders
    return ladder_orders + ig_orders


def compute(rows: dict[str, list], *, modes: dict[str, str], order_kinds: dict[str, str | None],
            history: dict[str, list] | None = None, hooks: tuple[str, ...] = ORDER_HOOKS,
            since: datetime | None = None, until: datetime | None = None,
            changes_of=None) -> Burden:
    """The figures from :meth:`SqlStore.governance_rows` output.

    ``modes``: rule -> configured mode; ``order_kinds``: rule -> ``orders`` of rule_inputs.yaml; ``history``:
    rule -> [(version, first_seen, inputs)] oldest first (``cds_rule_version``); ``changes_of(before, after)``
    describes what changed between two versions' inputs."""
    # denominators per week, by kind
    orders_by_week: dict[str, Counter] = {kind: Counter() for kind in ORDER_KINDS}
    weeks: set[date] = set()
    calls = refused = 0
    call_times: list[tuple[datetime, int, int]] = []
    for hook, called_at, status, ladder, ig, _shadow in rows["calls"]:
        calls += 1
        if status != 200:
            refused += 1
            continue
        if hook not in hooks:
            continue
        week = week_of(called_at)
        weeks.add(week)
        orders_by_week["immune-globulin"][week] += ig
        orders_by_week["ladder-or-immune-globulin"][week] += ladder + ig
        call_times.append((called_at, ladder, ig))

    feedback: dict[str, set[str]] = defaultdict(set)  # card uuid -> outcomes
    reasons_of: dict[str, tuple[str, str | None]] = {}
    for card_uuid, outcome, _at, code, display in rows["feedback"]:
        feedback[card_uuid].add(outcome)
        if outcome == "overridden":
            reasons_of.setdefault(card_uuid, (code or "unspecified", display))

    burdens: dict[str, RuleBurden] = {}
    version_cards: dict[tuple[str, str], list[tuple[datetime, str, bool]]] = defaultdict(list)

    def burden(rule: str) -> RuleBurden:
        if rule not in burdens:
            burdens[rule] = RuleBurden(rule=rule, mode=modes.get(rule, "on"),
                                       orders=order_kinds.get(rule) or "ladder-or-immune-globulin")
        return burdens[rule]

    for card_uuid, hook, rule, version, shadow, issued_at in rows["cards"]:
        if hook not in hooks:
            continue
        b = burden(rule)
        week = week_of(issued_at)
        weeks.add(week)
        c = b.weeks.setdefault(week, Counts())
        if shadow:
            c.shadow += 1
            b.total.shadow += 1
        else:
            c.shown += 1
            b.total.shown += 1
            outcomes = feedback.get(card_uuid, ())
            if "accepted" in outcomes:
                c.accepted += 1
                b.total.accepted += 1
            if "overridden" in outcomes:
                c.overridden += 1
                b.total.overridden += 1
                code, display = reasons_of[card_uuid]
                b.reasons[code] += 1
                if display:
                    b.reason_displays.setdefault(code, display)
        version_cards[(rule, version or "unversioned")].append((issued_at, card_uuid, bool(shadow)))

    for rule in modes:  # rules in shadow mode appear even before their first firing
        if modes[rule] == "shadow":
            burden(rule)

    for b in burdens.values():
        by_kind = orders_by_week[b.orders if b.orders in orders_by_week else "ladder-or-immune-globulin"]
        for week in weeks:
            c = b.weeks.setdefault(week, Counts())
            c.relevant_orders = by_kind.get(week, 0)
        b.total.relevant_orders = sum(by_kind.values())
        b.versions = _versions(b, version_cards, (history or {}).get(b.rule, []), call_times, feedback,
                               changes_of)
    ordered = sorted(burdens.values(), key=lambda r: (-(r.total.shown + r.total.shadow), r.rule))
    return Burden(since=since, until=until, hooks=tuple(hooks), weeks=sorted(weeks), calls=calls,
                  calls_refused=refused, rules=ordered)


def _versions(b: RuleBurden, version_cards, history, call_times, feedback, changes_of) -> list[VersionSlice]:
    """One slice per version of the rule seen in the cards, in the order they became active."""
    seen = {v for (rule, v) in version_cards if rule == b.rule}
    if not seen:
        return []
    first_seen = {version: at for version, at, _inputs in history}
    inputs = {version: inp for version, _at, inp in history}
    starts = {}
    for v in seen:
        first_card = min(at for at, _u, _s in version_cards[(b.rule, v)])
        starts[v] = min(first_seen.get(v, first_card), first_card)
    order = sorted(seen, key=lambda v: starts[v])
    slices = []
    for i, v in enumerate(order):
        end = starts[order[i + 1]] if i + 1 < len(order) else None
        s = VersionSlice(version=v, start=starts[v], end=end)
        if i and changes_of is not None and order[i - 1] in inputs and v in inputs:
            s.changes = changes_of(inputs[order[i - 1]], inputs[v])
        for at, ladder, ig in call_times:
            if at >= starts[v] and (end is None or at < end):
                s.counts.relevant_orders += relevant(b.orders, ladder, ig)
        for _at, card_uuid, shadow in version_cards[(b.rule, v)]:
            if shadow:
                s.counts.shadow += 1
                continue
            s.counts.shown += 1
            outcomes = feedback.get(card_uuid, ())
            s.counts.accepted += "accepted" in outcomes
            s.counts.overridden += "overridden" in outcomes
        slices.append(s)
    return slices
