"""Derived clinical calculations: body size and dosing weight (decision 11), eGFR by CKD-EPI 2021,
KDIGO acute kidney injury, and the assembly of the renal, thrombosis and contraindication factors from
what the readers found. Pure functions of their arguments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .. import body_size as size_from
from .. import criteria, kidney
from ..lab_values import below
from ..reactions import MILD, SEVERE, UNKNOWN, reaction_severity
from ..thresholds import Thresholds
from .model import NON_SYSTEMIC, Exposure, Factor, FactRef, LabValue, fmt


@dataclass
class BodySize:
    bmi: float | None = None
    ibw: float | None = None  # ideal body weight (Devine)
    adjusted_weight: float | None = None
    dosing_weight: float | None = None
    dosing_weight_basis: str = ""  # actual | adjusted
    bmi_reference: str | None = None  # the resource the BMI comes from (the weight, or a recorded BMI)


def body_size(weight: LabValue | None, height: LabValue | None, sex: str | None, th: Thresholds,
              recorded_bmi: LabValue | None = None) -> BodySize:
    """BMI, Devine ideal weight and the adjusted weight above the BMI threshold (decision 11). Without a
    measured height, a BMI recorded with the weight gives the height (decision 33); a recorded BMI alone
    still counts for obesity."""
    out = BodySize()
    if recorded_bmi is not None and recorded_bmi.comparator is None:
        out.bmi, out.bmi_reference = recorded_bmi.value, recorded_bmi.reference
    if weight is None:
        return out
    out.dosing_weight, out.dosing_weight_basis = weight.value, "actual"
    height_cm = height.value if height is not None and height.value > 0 else None
    if height_cm is None and out.bmi is not None and recorded_bmi is not None \
            and size_from.same_measurement(weight.when, recorded_bmi.when):
        height_cm = size_from.height_cm_from_bmi(weight.value, out.bmi)
    if height_cm is None:
        return out
    if height is not None and height.value > 0:
        h_m = height.value / 100
        out.bmi, out.bmi_reference = weight.value / (h_m * h_m), weight.reference
    if sex not in ("male", "female"):
        return out
    inches = height_cm / 2.54
    out.ibw = (50.0 if sex == "male" else 45.5) + 2.3 * (inches - 60)
    if out.bmi >= th.adjusted_weight_bmi and weight.value > out.ibw:
        out.adjusted_weight = out.ibw + th.adjusted_weight_factor * (weight.value - out.ibw)
        if th.use_adjusted_weight:
            out.dosing_weight, out.dosing_weight_basis = out.adjusted_weight, "adjusted"
    return out


def egfr_choice(egfrs: list[tuple[LabValue, str]], creatinines: list[LabValue], age: int | None,
                sex: str | None, height: LabValue | None) -> tuple[LabValue | None, str]:
    """The eGFR the renal card uses and, when there is none, why (decision 30, :mod:`..kidney`)."""
    keyed = {f"#{i}": lv for i, (lv, _) in enumerate(egfrs)} | {f"#c{i}": lv for i, lv in enumerate(creatinines)}
    results = [kidney.Result(lv.value, lv.when, f"#{i}", method, lv.comparator)
               for i, (lv, method) in enumerate(egfrs)]
    creat = [kidney.Result(lv.value, lv.when, f"#c{i}", comparator=lv.comparator) for i, lv in enumerate(creatinines)]
    choice = kidney.choose_egfr(results, creat, age=age, sex=sex, height_cm=height.value if height else None)
    if choice is None:
        return None, ""
    if choice.value is None:
        return None, choice.explanation
    source = keyed[choice.reference or ""]
    if choice.basis in ("reported-2021", "reported-other"):
        return source, ""
    return LabValue(kidney.BASIS_LABEL[choice.basis], choice.value, "mL/min/{1.73_m2}", source.when,
                    source.reference, "", computed=True), ""


def ckd_epi_2021(creatinine: LabValue | None, age: int | None, sex: str | None) -> LabValue | None:
    """eGFR computed from serum creatinine (mg/dL) by the race-free CKD-EPI 2021 equation (REN-CKD)."""
    if creatinine is None or age is None or sex is None:
        return None
    egfr = kidney.ckd_epi_2021(creatinine.value, age, sex)
    if egfr is None:
        return None
    return LabValue(kidney.BASIS_LABEL["computed-2021"], round(egfr), "mL/min/{1.73_m2}", creatinine.when,
                    creatinine.reference, "", computed=True)


def kdigo_aki(series: list[LabValue], th: Thresholds) -> Factor | None:
    """KDIGO creatinine criterion on the latest value (series newest first, mg/dL)."""
    if len(series) < 2 or series[0].when is None:
        return None
    latest = series[0]
    assert latest.when is not None
    prior = [s for s in series[1:] if s.when is not None]
    win48 = [s for s in prior if latest.when - s.when <= timedelta(hours=th.aki_rise_window_hours)]
    if win48:
        low = min(win48, key=lambda s: s.value)
        if latest.value - low.value >= th.aki_creatinine_rise_mg_dl - 1e-9:
            return Factor("aki", "Acute kidney injury (KDIGO creatinine rise)", latest.reference,
                          f"creatinine {fmt(low.value, 2)} -> {fmt(latest.value, 2)} mg/dL within "
                          f"{th.aki_rise_window_hours} h (rise >= {fmt(th.aki_creatinine_rise_mg_dl)} mg/dL)")
    win7 = [s for s in prior if latest.when - s.when <= timedelta(days=th.aki_baseline_window_days)]
    if win7:
        low = min(win7, key=lambda s: s.value)
        if low.value > 0 and latest.value >= th.aki_ratio * low.value - 1e-9:
            return Factor("aki", "Acute kidney injury (KDIGO creatinine rise)", latest.reference,
                          f"creatinine {fmt(low.value, 2)} -> {fmt(latest.value, 2)} mg/dL "
                          f"(x{fmt(latest.value / low.value, 2)} within {th.aki_baseline_window_days} days)")
    return None


# ============================================================================================ IVIG order dose



def _named(name: str, reference: str | None, detail: str = "", short: str = "", **fill: object) -> Factor:
    """A factor found outside the Conditions, named in ``criteria/risk_factors.yaml`` (derived_factors)."""
    e = criteria.derived_factors()[name]
    return Factor(e["key"], e["label"].format(**fill), reference, detail, short or e.get("short", ""))


def dedupe_factors(factors: list[Factor]) -> list[Factor]:
    """Each (key, source) once, first kept."""
    seen: set[tuple[str, str | None]] = set()
    out = []
    for fa in factors:
        k = (fa.key, fa.reference)
        if k not in seen:
            seen.add(k)
            out.append(fa)
    return out


def systemic_nephrotoxic(e: Exposure) -> bool:
    """A nephrotoxic drug given so that it reaches the kidney (acyclovir IV only, vancomycin not oral)."""
    if e.route in NON_SYSTEMIC or e.route == "transdermal":
        return False
    if e.ingredient == "acyclovir":
        return e.route == "iv"
    if e.ingredient == "vancomycin":
        return e.route != "oral"
    return True


def renal_critical(egfr: LabValue | None, from_conditions: list[Factor], aki: Factor | None,
                   th: Thresholds) -> list[Factor]:
    """Critical renal risk (IVIG renal card, critical variant): eGFR below the critical threshold, CKD 4-5,
    dialysis, acute kidney injury."""
    out = list(from_conditions)
    if egfr is not None and below(egfr.value, egfr.comparator, th.egfr_critical):
        out.insert(0, Factor("egfr", f"eGFR below {fmt(th.egfr_critical)}", egfr.reference, egfr.fact().value))
    if aki is not None:
        out.append(aki)
    return dedupe_factors(out)


def renal_factors(egfr: LabValue | None, found: list[Factor], age: int | None, patient_ref: str,
                  hba1c: LabValue | None, risk_drugs: list[Exposure], th: Thresholds) -> list[Factor]:
    """Renal risk factors for IVIG (knowledge §3.2, REN-CKD to REN-NEPHROTOX). ``found``: those of the
    Conditions and observations."""
    out = list(found)
    if egfr is not None and below(egfr.value, egfr.comparator, th.egfr_warning) \
            and not below(egfr.value, egfr.comparator, th.egfr_critical):
        label = f"eGFR below {fmt(th.egfr_warning)}"
        if below(egfr.value, egfr.comparator, th.egfr_critical) is None:  # decision 31: say what is unknown
            label += f" (cannot tell whether below {fmt(th.egfr_critical)})"
        out.insert(0, Factor("egfr", label, egfr.reference, egfr.fact().value))
    if age is not None and age > th.renal_age_years:
        out.append(_named("age_renal", patient_ref, f"{age} years", years=th.renal_age_years))
    if hba1c is not None and hba1c.value >= th.hba1c_diabetes_percent and not any(x.key == "diabetes" for x in out):
        out.append(_named("hba1c_diabetes", hba1c.reference, hba1c.fact().value))
    for e in risk_drugs:
        if e.current and "nephrotoxic-drug" in e.groups and systemic_nephrotoxic(e):
            out.append(_named("nephrotoxic_drug", e.reference, e.label, f"nephrotoxic drug ({e.ingredient})"))
    return dedupe_factors(out)


def thrombosis_factors(found: list[Factor], age: int | None, patient_ref: str, risk_drugs: list[Exposure],
                       bmi: float | None, bmi_reference: str | None, hyperviscosity: list[Factor],
                       heart_failure: list[Factor], pregnancy: list[FactRef], th: Thresholds) -> list[Factor]:
    """Thrombosis risk factors for IVIG (knowledge §3.2, THR-AGE to THR-CV). ``found``: those of the
    Conditions and devices."""
    out = list(found)
    out += [_named("estrogen_drug", e.reference, e.label) for e in risk_drugs  # not local estrogen: decision 38
            if e.current and "estrogen-thrombosis-risk" in e.groups and not e.local_estrogen]
    if age is not None and age >= th.thrombosis_age_years:
        out.insert(0, _named("age_thrombosis", patient_ref, f"{age} years", years=th.thrombosis_age_years))
    if bmi is not None and bmi >= th.adjusted_weight_bmi:
        out.append(_named("obesity", bmi_reference, f"obesity, BMI {fmt(bmi)} kg/m2",
                          f"obesity (BMI {fmt(bmi)})"))
    if hyperviscosity:
        out.append(_named("hyperviscosity_thrombosis", hyperviscosity[0].reference, hyperviscosity[0].detail))
    if heart_failure:
        hf = heart_failure[0]
        out.append(_named("heart_failure_thrombosis", hf.reference, hf.detail, hf.short))
    out += [_named("pregnancy_thrombosis", p.reference, p.value) for p in pregnancy]
    return dedupe_factors(out)


def contraindications(found: list[Factor], pregnancy: list[FactRef], egfr: LabValue | None,
                      th: Thresholds) -> list[Factor]:
    """Contraindications to standard immunosuppression (``criteria/contraindications.yaml``)."""
    out = list(found)
    derived = criteria.derived_contraindications()
    preg = derived["pregnancy"]
    out += [Factor(preg.key, preg.label, p.reference, f"{p.value}; affects {preg.affects}") for p in pregnancy]
    low = derived["egfr"]
    if egfr is not None and below(egfr.value, egfr.comparator, th.egfr_critical) \
            and not any(c.key == low.key for c in out):
        out.append(Factor(low.key, low.label.format(egfr=fmt(th.egfr_critical)), egfr.reference,
                          f"{egfr.fact().value}; affects {low.affects}"))
    return out


def iga_deficiency(found: list[FactRef], iga_level: LabValue | None, th: Thresholds) -> list[FactRef]:
    """IgA deficiency recorded, or a serum IgA below the threshold (decision 10). A result reported as a
    bound that leaves the side open ("<10 mg/dL") is named as such, not guessed (decision 31)."""
    if iga_level is None:
        return list(found)
    side = below(iga_level.value, iga_level.comparator, th.iga_deficiency_mg_dl)
    if side:
        return [*found, iga_level.fact(f"Serum IgA below {fmt(th.iga_deficiency_mg_dl)} mg/dL")]
    if side is None:
        return [*found, iga_level.fact(f"Serum IgA: cannot tell whether below {fmt(th.iga_deficiency_mg_dl)} mg/dL")]
    return list(found)


@dataclass(frozen=True)
class IgReactions:
    """Earlier reactions to immune globulin, by how serious they were (decision 37)."""

    all: list[FactRef]
    severe: bool
    mild: list[FactRef]
    unknown: list[FactRef]


def ig_reactions(from_conditions: list[FactRef], anaphylaxis_after_ig: list[FactRef],
                 from_allergies: list[tuple[FactRef, str]]) -> IgReactions:
    """An adverse-effect Condition is rated by its text, an anaphylaxis after immune globulin is serious, an
    allergy record by its manifestations (``reactions.reaction_severity``)."""
    rated = ([(fr, reaction_severity([fr.value])) for fr in from_conditions]
             + [(fr, SEVERE) for fr in anaphylaxis_after_ig] + list(from_allergies))
    return IgReactions([fr for fr, _ in rated], any(s == SEVERE for _, s in rated),
                       [fr for fr, s in rated if s == MILD], [fr for fr, s in rated if s == UNKNOWN])
