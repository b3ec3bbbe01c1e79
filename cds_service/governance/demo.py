"""A synthetic audit history with known figures: for trying the report, and for testing it.

Twelve weeks of order-sign calls (immune globulin and ladder-drug orders, some patient-view calls and a
few refused calls), five rules with different firing and override rates, one in shadow mode, and a
threshold change halfway: from week 6 ``ivig.safety.renal`` runs with ``egfr_warning`` 45 instead of 60,
so it fires less often and is overridden less. Every count is fixed by :data:`PLAN` (no randomness): the
generator returns the figures it planned (:class:`Truth`), which the tests compare with the report.
No row holds a real patient: patient keys are hashes of made-up ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cds_service.store.base import CallRow, CardRow, FeedbackRow, RuleVersionRow

START = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
WEEKS = 12
CHANGE_WEEK = 6  # ivig.safety.renal: egfr_warning 60 -> 45 from this week on
SERVICE = "neurosarcoidosis-order-sign"

# rule -> (mode, relevant orders, firing share, override share, acceptance share, reasons with weights);
# ivig.safety.renal has one entry per version (before, after the change).
PLAN: dict[str, list[tuple]] = {
    "ivig.safety.renal": [
        ("on", "immune-globulin", 0.40, 0.60, 0.20,
         {"already-addressed": 3, "benefit-outweighs-risk": 2, "data-incorrect": 1}),
        ("on", "immune-globulin", 0.25, 0.30, 0.45, {"already-addressed": 1, "benefit-outweighs-risk": 1}),
    ],
    "ivig.safety.thrombosis": [("on", "immune-globulin", 0.50, 0.70, 0.10,
                                {"benefit-outweighs-risk": 3, "specialist-decision": 1})],
    "ivig.dose": [("on", "immune-globulin", 0.30, 0.20, 0.60, {"specialist-decision": 1})],
    "ivig.safety.hyperviscosity": [("shadow", "immune-globulin", 0.10, 0.0, 0.0, {})],
    "stage.s3r-gc-refractory": [("on", "ladder-or-immune-globulin", 0.15, 0.40, 0.30,
                                 {"specialist-decision": 2, "not-neurosarcoidosis": 1})],
}


def ig_calls(week: int) -> int:
    return 30 + (week * 7) % 11


def ladder_calls(week: int) -> int:
    return 20 + (week * 5) % 7


@dataclass
class Truth:
    """The planned figures: per rule and week (Monday), and per rule and version."""

    weeks: list = field(default_factory=list)
    relevant: dict = field(default_factory=dict)  # (kind, week) -> orders
    shown: dict = field(default_factory=dict)  # (rule, week) -> cards returned
    shadow: dict = field(default_factory=dict)  # (rule, week) -> shadow firings
    accepted: dict = field(default_factory=dict)  # (rule, week)
    overridden: dict = field(default_factory=dict)  # (rule, week)
    reasons: dict = field(default_factory=dict)  # rule -> {code: n}
    versions: dict = field(default_factory=dict)  # rule -> [version, ...] in order
    by_version: dict = field(default_factory=dict)  # (rule, version) -> {"shown", "overridden", "accepted", "relevant"}
    modes: dict = field(default_factory=dict)


@dataclass
class History:
    calls: list[CallRow]
    cards: list[CardRow]
    feedback: list[FeedbackRow]
    versions: list[RuleVersionRow]
    truth: Truth


def _versions():
    from cds_service.clinical.thresholds import Thresholds
    from cds_service.governance.versions import current_versions

    before = current_versions(thresholds=Thresholds(egfr_warning=60))
    after = current_versions(thresholds=Thresholds(egfr_warning=45))
    return before, after


def _spread(n: int, share: float) -> int:
    return int(round(n * share + 1e-9))


def _reason_cycle(weights: dict[str, int]) -> list[str]:
    return [code for code, w in weights.items() for _ in range(w)]


def generate(weeks: int = WEEKS, change_week: int = CHANGE_WEEK, start: datetime = START) -> History:
    before, after = _versions()
    truth = Truth(modes={rule: plan[0][0] for rule, plan in PLAN.items()})
    calls: list[CallRow] = []
    cards: list[CardRow] = []
    feedback: list[FeedbackRow] = []
    serial = 0
    for rule, plan in PLAN.items():
        truth.versions[rule] = [before[rule].version] + ([after[rule].version] if len(plan) > 1 else [])
    for w in range(weeks):
        monday = start + timedelta(weeks=w)
        truth.weeks.append(monday.date())
        n_ig, n_ladder = ig_calls(w), ladder_calls(w)
        truth.relevant[("immune-globulin", monday.date())] = n_ig
        truth.relevant[("ladder-or-immune-globulin", monday.date())] = n_ig + n_ladder
        # call i of the week: immune globulin orders first, then ladder orders; spread over Mon-Fri
        times = [monday + timedelta(days=i % 5, hours=8 + (i // 5) % 9, minutes=(7 * i) % 60)
                 for i in range(n_ig + n_ladder)]
        fired: dict[int, list[tuple[str, str, bool]]] = {}
        for rule, plan in PLAN.items():
            phase = plan[1] if (len(plan) > 1 and w >= change_week) else plan[0]
            mode, kind, fire, over, acc, reasons = phase
            version = (after if (len(plan) > 1 and w >= change_week) else before)[rule].version
            pool = n_ig if kind == "immune-globulin" else n_ig + n_ladder
            k = _spread(pool, fire)
            n_over, n_acc = _spread(k, over), _spread(k, acc)
            key = (rule, monday.date())
            shadow = mode == "shadow"
            truth.shown[key] = 0 if shadow else k
            truth.shadow[key] = k if shadow else 0
            truth.overridden[key] = 0 if shadow else n_over
            truth.accepted[key] = 0 if shadow else n_acc
            slot = truth.by_version.setdefault((rule, version), {"shown": 0, "overridden": 0, "accepted": 0,
                                                                 "relevant": 0})
            slot["relevant"] += pool
            if not shadow:
                slot["shown"] += k
                slot["overridden"] += n_over
                slot["accepted"] += n_acc
            cycle = _reason_cycle(reasons)
            for j in range(k):
                serial += 1
                uuid = f"demo-{serial:08d}"
                # immune globulin rules fire on the first calls; ladder rules from the last (ladder orders) back
                call = j if kind == "immune-globulin" else n_ig + n_ladder - 1 - j
                fired.setdefault(call, []).append((uuid, rule, shadow))
                if shadow:
                    continue
                at = times[call] + timedelta(minutes=2)
                if j < n_over:
                    code = cycle[j % len(cycle)]
                    truth.reasons.setdefault(rule, {}).setdefault(code, 0)
                    truth.reasons[rule][code] += 1
                    feedback.append(FeedbackRow(card_uuid=uuid, service=SERVICE, outcome="overridden", outcome_at=at,
                                                received_at=at, reason_code=code, reason_display=None))
                elif j < n_over + n_acc:
                    feedback.append(FeedbackRow(card_uuid=uuid, service=SERVICE, outcome="accepted", outcome_at=at,
                                                received_at=at, accepted_suggestions=("s1",)))
        for i, at in enumerate(times):
            is_ig = i < n_ig
            these = fired.get(i, [])
            shown = [c for c in these if not c[2]]
            key = "pat-" + hashlib.sha256(f"demo-patient-{i % 97}".encode()).hexdigest()[:16]
            for uuid, rule, shadow in these:
                version = _version_at(truth, rule, w, change_week)
                cards.append(CardRow(card_uuid=uuid, service=SERVICE, hook="order-sign", rule_id=rule,
                                     indicator="warning", hook_instance=f"demo-call-{w}-{i}", issued_at=at,
                                     patient_key=hashlib.sha256(key.encode()).hexdigest(), shadow=shadow,
                                     rule_version=version))
            calls.append(CallRow(call_id=f"demo{w:02d}{i:04d}", service=SERVICE, hook="order-sign", called_at=at,
                                 status=200, cards_warning=len(shown), shadow_cards=len(these) - len(shown),
                                 duration_ms=4.0, ladder_orders=0 if is_ig else 1, ig_orders=1 if is_ig else 0))
        for i in range(3):  # chart openings (no orders) and a refused call: not in any denominator
            at = monday + timedelta(days=i, hours=7)
            calls.append(CallRow(call_id=f"demo{w:02d}pv{i}", service="neurosarcoidosis-patient-view",
                                 hook="patient-view", called_at=at, status=200))
        calls.append(CallRow(call_id=f"demo{w:02d}err", service=SERVICE, hook="order-sign",
                             called_at=monday + timedelta(days=2, hours=12), status=412))
    versions = [RuleVersionRow(rule_id=rule, version=before[rule].version, first_seen=start,
                               inputs=before[rule].inputs) for rule in PLAN]
    versions.append(RuleVersionRow(rule_id="ivig.safety.renal", version=after["ivig.safety.renal"].version,
                                   first_seen=start + timedelta(weeks=change_week),
                                   inputs=after["ivig.safety.renal"].inputs))
    return History(calls=calls, cards=cards, feedback=feedback, versions=versions, truth=truth)


def _version_at(truth: Truth, rule: str, week: int, change_week: int) -> str:
    versions = truth.versions[rule]
    return versions[1] if len(versions) > 1 and week >= change_week else versions[0]


async def fill(store, history: History | None = None) -> History:
    """Write a generated history into ``store`` (migrated first)."""
    history = history or generate()
    await store.upgrade()
    await store.record_rule_versions(history.versions)
    for i in range(0, len(history.calls), 500):
        await store.record_audit(history.calls[i:i + 500])
    for i in range(0, len(history.cards), 500):
        await store.record_audit(history.cards[i:i + 500])
    for i in range(0, len(history.feedback), 500):
        await store.record_feedback(history.feedback[i:i + 500])
    return history
