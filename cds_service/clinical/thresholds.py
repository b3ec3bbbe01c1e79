"""Every clinical number the rules use, as site-configurable settings (env prefix ``CDS_``).

Defaults come from the product decisions (``docs/clinical/decisions.md``, which win) and, where they are
silent, from the research proposals (``docs/clinical/knowledge.md``). Every card prints the number it used,
so a site that changes a value here sees the change on its cards. ``docs/thresholds.md`` is generated from
this class (:func:`markdown_table`).

Comparison direction is part of each description: "at least" means ``>=``, "above" ``>``, "below" ``<``.
"""

from __future__ import annotations

import functools
import math

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Pairs of settings whose order the rules rely on: (lower, higher, may_be_equal, why). A site that changes
# one of them without the other gets a start-up error naming both instead of cards that silently invert
# (eGFR 'critical' at 90 with 'warning' at 60 would call every reduced eGFR critical).
ORDERED_PAIRS: tuple[tuple[str, str, bool, str], ...] = (
    ("egfr_critical", "egfr_warning", False, "critical renal impairment is the lower eGFR"),
    ("gc_dependence_mg", "gc_high_dose_mg", False, "glucocorticoid dependence is a maintenance dose below the "
     "high dose"),
    ("gc_high_dose_mg", "gc_pulse_mg", False, "an IV pulse is a higher dose than a high oral dose"),
    ("gc_high_dose_mg", "prednisone_suggested_mg_day", True, "the prednisone dose proposed for untreated disease "
     "must count as a high-dose trial"),
    ("mtx_subtherapeutic_mg_week", "mtx_suggested_mg_week", True, "the methotrexate dose proposed on escalation "
     "cards must not be sub-therapeutic"),
    ("ivig_dose_g_per_kg", "ivig_max_course_g_per_kg", True, "the proposed IVIG course must not trip the "
     "course-dose warning"),
    ("ivig_min_days", "ivig_suggested_days", True, "the proposed IVIG course must not trip the too-few-days "
     "warning"),
    ("ivig_suggested_days", "ivig_max_days", True, "the proposed IVIG course must stay within the usual days"),
)
# Ranges other than 'a positive number' (every other numeric threshold must be above 0).
RANGES: dict[str, tuple[float, float | None, str]] = {
    "adjusted_weight_factor": (0.0, 1.0, "from 0 to 1 (adjusted weight lies between ideal and actual weight)"),
    "aki_ratio": (1.0, None, "above 1 (a creatinine at least this multiple of the baseline)"),
}


class Thresholds(BaseSettings):
    """Clinical thresholds; override any of them with ``CDS_<NAME>`` (e.g. ``CDS_GC_HIGH_DOSE_MG=30``)."""

    model_config = SettingsConfigDict(env_prefix="CDS_", env_file=".env", extra="ignore")

    # ----------------------------------------------------------------- scope
    adult_age_years: int = Field(18, description="Ladder and IVIG-indication cards only at this age or older "
                                 "(decision 1, A20).")
    ivig_safety_sarcoidosis_only: bool = Field(False, description="When true, IVIG safety cards fire only for "
                                               "patients with a sarcoidosis code (decision 2 default: every "
                                               "IVIG order).")

    # ----------------------------------------------------------------- glucocorticoids (B5, decision 4)
    gc_high_dose_mg: float = Field(20, description="A glucocorticoid course counts as a first-line trial when "
                                   "its maximum daily dose is at least this many mg prednisone-equivalent "
                                   "(decision 4).")
    gc_pulse_mg: float = Field(250, description="An intravenous glucocorticoid dose of at least this many mg "
                               "prednisone-equivalent per day is an IV pulse (counts as a trial).")
    gc_min_trial_days: int = Field(14, description="Minimum days of high-dose glucocorticoid before continued "
                                   "disease counts against it (decision 5).")
    gc_dependence_mg: float = Field(10, description="GC dependence: current dose above this many mg "
                                    "prednisone-equivalent per day ...")
    gc_dependence_after_days: int = Field(90, description="... after at least this many days of therapy "
                                          "(B4.4, Pulm Ther 2021).")
    gc_replacement_hydrocortisone_max_mg: float = Field(30, description="Hydrocortisone at or below this daily "
                                                        "dose is physiological replacement and ignored (A4).")
    gc_other_indication_min_days: int = Field(14, description="A GC course without a sarcoidosis reason counts "
                                              "for the ladder only if it lasted at least this many days (A3).")
    prednisone_suggested_mg_day: float = Field(40, description="Prednisone dose proposed on the 'untreated' "
                                               "card (decision 26: 0.5-1 mg/kg in neurosarcoidosis reviews; "
                                               "the first-line trial bar stays gc_high_dose_mg).")

    # ----------------------------------------------------------------- second line / anti-TNF
    second_line_min_trial_days: int = Field(84, description="Minimum days (12 weeks) of a second-line agent "
                                            "before continued disease counts against it (decision 5).")
    mtx_subtherapeutic_mg_week: float = Field(10, description="Methotrexate below this weekly dose is "
                                              "sub-therapeutic and does not complete a trial (B4).")
    mtx_suggested_mg_week: float = Field(15, description="Methotrexate weekly dose proposed on escalation cards "
                                         "(ERS 2021: 10-15 mg once weekly).")
    anti_tnf_min_trial_days: int = Field(84, description="Minimum days (12 weeks) of anti-TNF therapy ... "
                                         "(decision 5).")
    anti_tnf_min_infusions: int = Field(3, description="... or at least this many infliximab infusions.")
    infliximab_mg_per_kg: float = Field(5, description="Infliximab dose proposed on escalation cards, mg per kg "
                                        "actual body weight (ERS 2021: 3-5 mg/kg).")

    # ----------------------------------------------------------------- 'current' windows (B2)
    infusion_current_days_anti_tnf: int = Field(84, description="An infused anti-TNF is current if the last "
                                                "administration was within this many days (1.5 x 8 weeks).")
    infusion_current_days_ivig: int = Field(56, description="IVIG is current if the last administration was "
                                            "within this many days (maintenance courses).")
    infusion_current_days_rituximab: int = Field(270, description="Rituximab is current if the last "
                                                 "administration was within this many days.")
    infusion_current_days_cyclophosphamide: int = Field(45, description="IV cyclophosphamide is current if the "
                                                        "last pulse was within this many days (monthly pulses).")
    infusion_current_days_gc_pulse: int = Field(14, description="An IV glucocorticoid pulse keeps the patient "
                                                "'on glucocorticoid' for this many days.")

    # ----------------------------------------------------------------- decompensation (IVIG-IND-DECOMP)
    decompensation_window_days: int = Field(30, description="New NS manifestations or escalation events within "
                                            "this many days count as rapid progression.")
    decompensation_min_new_manifestations: int = Field(2, description="At least this many new NS "
                                                       "manifestations in the window = rapid progression.")

    # ----------------------------------------------------------------- data recency (decisions 8 and 11)
    lab_recency_days: int = Field(30, description="Creatinine/eGFR/IgA older than this many days are treated as "
                                  "missing (decision 8, A17).")
    weight_recency_days: int = Field(30, description="Body weight older than this many days is treated as "
                                     "missing (decision 11).")

    # ----------------------------------------------------------------- renal (decision 8)
    pregnancy_status_recency_days: int = Field(280, description="A pregnancy status answer (LOINC 82810-3) or "
                                               "pregnancy test (hCG) older than this many days is not read "
                                               "(decision 28).")
    egfr_warning: float = Field(60, description="eGFR below this (mL/min/1.73 m2) -> renal warning.")
    egfr_critical: float = Field(30, description="eGFR below this (mL/min/1.73 m2) -> renal critical.")
    renal_age_years: int = Field(65, description="Age above this is a renal risk factor (label: age > 65).")
    aki_creatinine_rise_mg_dl: float = Field(0.3, description="KDIGO AKI: creatinine rise of at least this many "
                                             "mg/dL ...")
    aki_rise_window_hours: int = Field(48, description="... within this many hours, or ...")
    aki_ratio: float = Field(1.5, description="... a creatinine at least this multiple of ...")
    aki_baseline_window_days: int = Field(7, description="... the lowest value in the preceding this many days.")
    hba1c_diabetes_percent: float = Field(6.5, description="HbA1c at or above this (%) counts as diabetes "
                                          "(renal risk factor).")

    # ----------------------------------------------------------------- thrombosis (decision 9)
    thrombosis_age_years: int = Field(65, description="Age at or above this is a thrombosis risk factor.")
    thrombosis_high_risk_factor_count: int = Field(3, description="This many thrombosis factors or more (or "
                                                   "prior thrombosis/thrombophilia) -> 'high risk' wording.")

    # ----------------------------------------------------------------- IgA (decision 10)
    iga_deficiency_mg_dl: float = Field(7, description="Serum IgA below this (mg/dL) counts as IgA deficiency.")

    # ----------------------------------------------------------------- IVIG dose (decision 11)
    ivig_dose_g_per_kg: float = Field(2.0, description="IVIG course dose, g per kg dosing weight.")
    ivig_max_course_g_per_kg: float = Field(2.2, description="Ordered course above this (g/kg) -> dose warning.")
    ivig_max_daily_g_per_kg: float = Field(1.0, description="Ordered daily dose above this (g/kg) -> warning.")
    ivig_min_days: int = Field(2, description="A course given over fewer days than this -> warning.")
    ivig_max_days: int = Field(5, description="Usual maximum number of days of a course (shown on the card).")
    ivig_suggested_days: int = Field(5, description="Days over which a proposed IVIG course is split.")
    use_adjusted_weight: bool = Field(True, description="Dose by adjusted weight when BMI is at or above the "
                                      "threshold below (site policy; both weights are always shown).")
    adjusted_weight_bmi: float = Field(30, description="BMI (kg/m2) at or above which the adjusted weight is "
                                       "the dosing weight.")
    adjusted_weight_factor: float = Field(0.4, description="Adjusted weight = IBW + factor x (actual - IBW).")

    # ----------------------------------------------------------------- heart failure volume (decision 12)
    ivig_concentration_percent: float = Field(10, description="IVIG concentration (% w/v) assumed when neither "
                                              "the product's strength, its name nor its brand gives it "
                                              "(decision 34); the card says it was assumed.")
    hf_daily_volume_ml: float = Field(500, description="Daily infusion volume above this (mL) is stated as a "
                                      "large volume load on the heart-failure card.")

    @model_validator(mode="after")
    def _consistent(self) -> Thresholds:
        problems = threshold_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _env(name: str) -> str:
    return f"CDS_{name.upper()}"


def threshold_problems(th: Thresholds) -> list[str]:
    """One sentence per threshold outside its range or out of order with its partner (empty when consistent)."""
    problems = []
    for name in Thresholds.model_fields:
        value = getattr(th, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        low, high, words = RANGES.get(name, (0.0, None, "above 0"))
        inclusive_low = name == "adjusted_weight_factor"
        if not math.isfinite(value):  # NaN passes every comparison below; infinity is no threshold either
            problems.append(f"{_env(name)} must be a finite number, {words} (it is {value}).")
            continue
        if value < low or (value == low and not inclusive_low) or (high is not None and value > high):
            problems.append(f"{_env(name)} must be {words} (it is {value:g}).")
    for lower, higher, may_equal, why in ORDERED_PAIRS:
        a, b = getattr(th, lower), getattr(th, higher)
        if a > b or (a == b and not may_equal):
            relation = "at most" if may_equal else "below"
            problems.append(f"{_env(lower)} ({a:g}) must be {relation} {_env(higher)} ({b:g}): {why}.")
    # the proposed course split over the proposed days must not trip the daily-dose warning either
    daily = th.ivig_dose_g_per_kg / th.ivig_suggested_days if th.ivig_suggested_days > 0 else 0
    if daily > th.ivig_max_daily_g_per_kg + 1e-9:
        problems.append(f"CDS_IVIG_DOSE_G_PER_KG / CDS_IVIG_SUGGESTED_DAYS ({daily:g} g/kg a day) must be at most "
                        f"CDS_IVIG_MAX_DAILY_G_PER_KG ({th.ivig_max_daily_g_per_kg:g}): the proposed course must not "
                        "trip the daily-dose warning.")
    return problems


@functools.lru_cache(maxsize=1)
def get_thresholds() -> Thresholds:
    return Thresholds()


def markdown_table() -> str:
    """The Markdown table of settings written to ``docs/thresholds.md`` (defaults, not the environment)."""
    lines = [
        "# Clinical thresholds",
        "",
        "Generated from `cds_service/clinical/thresholds.py`",
        "(`python -m cds_service.clinical.thresholds > docs/thresholds.md`).",
        "Every value is a default a site can change with the environment variable shown; every card shows",
        "the number it used. Sources: the product decisions in `docs/clinical/decisions.md` (they win) and the",
        "research proposals in `docs/clinical/knowledge.md`.",
        "",
        "| setting | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Thresholds.model_fields.items():
        default = field.default
        if isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | `CDS_{name.upper()}` | {shown} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table(), end="")
