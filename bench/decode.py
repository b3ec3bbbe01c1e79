"""What decoding the request body costs, and what a typed, selective decode would save.

    python bench/decode.py                     # both request shapes at 10, 100 and 1,000 resources
    python bench/decode.py --sizes 100 --shapes relapse --reps 9

The service and the floor both parse the whole body with ``orjson.loads``. The alternative is to decode
each prefetched resource straight into the shape the rules read, skipping everything else (msgspec Structs,
unknown fields ignored). This times four decoders of the same body, best of ``--reps`` runs of many calls,
with the garbage collector frozen and enabled as in the server:

- ``orjson``: the whole body into dicts and lists (what the service does today);
- ``read fields``: per resource type a Struct holding only the top-level elements the engine reads, their
  values still plain dicts and lists (the readers would stay as they are);
- ``typed``: the same elements as nested Structs (Coding, CodeableConcept, Quantity, Dosage ...), the
  ceiling of a full typed decode (every reader rewritten to read attributes);
- ``ids only``: resourceType and id of each resource, the floor of any decode that visits every resource.

The gap between ``orjson`` and ``typed`` is the most a typed decode can take off a call; bench/stages.py
gives the whole call beside it.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson
from msgspec import UNSET, Struct, UnsetType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gen  # noqa: E402
from cds_service.clinical.facts.validation import _PROJECTION  # noqa: E402

# Elements the engine reads besides the validated projection (patient link, medication reference, ...).
_ALSO_READ = ("id", "subject", "patient", "contained", "medicationReference", "category", "reasonReference",
              "extension", "meta", "basedOn", "requester", "encounter", "code", "note")
_OTHER_TYPES = ("Medication", "OperationOutcome", "Procedure", "Immunization", "DiagnosticReport", "CarePlan")


def _tagged(name: str, fields: dict[str, Any]) -> type[Struct]:
    ns: dict[str, Any] = {"__annotations__": {k: v | UnsetType for k, v in fields.items()}}
    ns.update({k: UNSET for k in fields})
    return type(name, (Struct,), ns, tag=name, tag_field="resourceType", kw_only=True)


def _one_of(types: list[type[Struct]]) -> Any:
    """The union of ``types`` (tagged by resourceType)."""
    union: Any = types[0]
    for t in types[1:]:
        union = union | t
    return union


def _envelope(resource: Any) -> type[Struct]:
    """The hook request with each prefetch value a Bundle of ``resource`` or one ``resource``."""
    entry = type("Entry", (Struct,), {"__annotations__": {"resource": resource, "search": Any}, "search": None})
    bundle = type("Bundle", (Struct,), {"__annotations__": {"entry": list[entry], "link": Any},  # type: ignore
                                        "entry": [], "link": None}, tag="Bundle", tag_field="resourceType")
    prefetch = dict[str, bundle | resource | None]  # type: ignore
    return type("Hook", (Struct,), {"__annotations__": {"hook": str, "hookInstance": str, "context": Any,
                                                         "fhirServer": Any, "prefetch": prefetch},
                                     "fhirServer": None, "prefetch": {}})


def _read_elements_decoder(type_of: dict[str, Any]) -> msgspec.json.Decoder:
    """Each read resource type with the elements the engine reads, typed by ``type_of`` (Any when absent)."""
    types = [_tagged(rt, {f: type_of.get(f, Any) for f in (*fields, *_ALSO_READ)})
             for rt, fields in _PROJECTION.items()]
    types += [_tagged(rt, {"id": Any}) for rt in _OTHER_TYPES]
    return msgspec.json.Decoder(_envelope(_one_of(types)))


def read_fields_decoder() -> msgspec.json.Decoder:
    return _read_elements_decoder({})


class Coding(Struct):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class Concept(Struct):
    coding: list[Coding] = []
    text: str | None = None


class Quantity(Struct):
    value: float | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None
    comparator: str | None = None


class Ref(Struct):
    reference: str | None = None
    display: str | None = None


class Period(Struct):
    start: str | None = None
    end: str | None = None


class Range(Struct):
    low: Quantity | None = None
    high: Quantity | None = None


class Repeat(Struct):
    frequency: int | None = None
    frequencyMax: int | None = None
    period: float | None = None
    periodUnit: str | None = None
    boundsPeriod: Period | None = None
    boundsDuration: Quantity | None = None
    count: int | None = None


class Timing(Struct):
    repeat: Repeat | None = None
    code: Concept | None = None
    event: list[str] = []


class DoseAndRate(Struct):
    doseQuantity: Quantity | None = None
    doseRange: Range | None = None


class Dosage(Struct):
    text: str | None = None
    timing: Timing | None = None
    route: Concept | None = None
    doseAndRate: list[DoseAndRate] = []
    patientInstruction: str | None = None


class Annotation(Struct):
    text: str | None = None


_TYPED: dict[str, Any] = {
    "status": str, "intent": str, "criticality": str, "gender": str, "birthDate": str, "authoredOn": str,
    "issued": str, "recordedDate": str, "onsetDateTime": str, "abatementDateTime": str, "effectiveDateTime": str,
    "effectiveInstant": str, "whenHandedOver": str, "valueString": str, "id": str,
    "code": Concept, "clinicalStatus": Concept, "verificationStatus": Concept, "valueCodeableConcept": Concept,
    "medicationCodeableConcept": Concept, "type": Concept, "class": Any, "statusReason": list[Concept] | Concept,
    "category": list[Concept], "bodySite": list[Concept], "reasonCode": list[Concept], "interpretation": list[Concept],
    "valueQuantity": Quantity, "daysSupply": Quantity, "subject": Ref, "patient": Ref, "medicationReference": Ref,
    "encounter": Ref, "requester": Ref, "reasonReference": list[Ref], "basedOn": list[Ref],
    "onsetPeriod": Period, "abatementPeriod": Period, "effectivePeriod": Period, "period": Period,
    "dosage": list[Dosage] | Dosage, "dosageInstruction": list[Dosage], "note": list[Annotation],
    "referenceRange": list[Range], "dispenseRequest": Any, "evidence": Any, "reaction": Any, "contained": Any,
    "extension": Any, "meta": Any,
}


def typed_decoder() -> msgspec.json.Decoder:
    return _read_elements_decoder(_TYPED)


def ids_only_decoder() -> msgspec.json.Decoder:
    types = [_tagged(rt, {"id": Any}) for rt in (*_PROJECTION, *_OTHER_TYPES)]
    return msgspec.json.Decoder(_envelope(_one_of(types)))


def best_us(fn: Any, reps: int, calls: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--shapes", default=",".join(gen.SHAPES))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the rows here (bench/run.py reads them)")
    args = ap.parse_args(argv)
    decoders = {"read fields": read_fields_decoder(), "typed": typed_decoder(), "ids only": ids_only_decoder()}
    gc.collect()
    gc.freeze()
    print("| shape | resources | body KB | orjson µs | " + " | ".join(f"{n} µs" for n in decoders) + " |")
    print("| --- | ---: | ---: | ---: |" + " ---: |" * len(decoders))
    rows = []
    for shape in args.shapes.split(","):
        for n in map(int, args.sizes.split(",")):
            body = orjson.dumps(gen.build_request(n, shape=shape))
            calls = max(5, 20_000 // n)
            row = [best_us(lambda b=body: orjson.loads(b), args.reps, calls)]
            for name, dec in decoders.items():
                try:
                    dec.decode(body)
                except msgspec.ValidationError as exc:  # a typed decode refuses what it does not expect
                    raise SystemExit(f"{name} refused the {shape} {n} body: {exc}") from exc
                row.append(best_us(lambda d=dec, b=body: d.decode(b), args.reps, calls))
            print(f"| {shape} | {n:,} | {len(body) / 1024:,.0f} | " + " | ".join(f"{v:,.0f}" for v in row) + " |")
            rows.append({"shape": shape, "resources": n, "kb": len(body) / 1024,
                         "us": dict(zip(("orjson", *decoders), row, strict=True))})
    if args.json:
        args.json.write_bytes(orjson.dumps(rows))


if __name__ == "__main__":
    main()
