"""Value sets and code matching.

Sources, in order:

1. ``data/terminology.json`` (418 entries with ``group``/``system``/``code``/``verified``): every entry is
   a member of its ``group`` value set. ATC entries match by prefix (``G03C`` covers ``G03CA03``).
2. :data:`CATEGORIES` (``criteria/value_sets.yaml``): finer value sets the rules need (``renal.dialysis`` ...).
   They list codes of ``terminology.json`` (whose ``verified`` flag they inherit) and the ICD-10-CM
   *families* the research names (``N18.x``, ``E08-E13``, ``I50.x`` ...; knowledge §2.2 and §3.2), matched by prefix.
3. The site file named by ``CDS_EXTRA_CODES`` (YAML or JSON): a list of ``{group, system, code, display,
   verified?, prefix?}`` entries (``group`` may be a terminology group or a category), or a mapping with
   ``codes: [...]`` and ``ivig_rxnorm: [...]`` (site RxNorm codes for IVIG products, decision 14).

Decision 13 (an unverified code is never the only way a rule fires) is enforced in :meth:`Terminology.match`:
a hit on an unverified code counts only when the same CodeableConcept also carries a verified code or an
ATC code of the same value set, or its text/display contains the display that ``terminology.json`` gives
for that code (so a mistyped or re-used code with a different meaning cannot fire a rule on its own).

Medication concepts are also matched by ingredient name (A12: biosimilars ``infliximab-dyyb``, brand
names, local codes) and immune globulin by name and brand (decision 14). Condition concepts are never
matched by free text alone.

Everything is loaded once (:func:`get_terminology`) and matching is plain dict/set lookups.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import criteria
from .memo import Memo, by_short_text, clear_all
from .resources import data_path

SNOMED = "SNOMED"
ICD10 = "ICD10"
RXNORM = "RXNORM"
LOINC = "LOINC"
ATC = "ATC"

SYSTEM_URI = {
    SNOMED: "http://snomed.info/sct",
    ICD10: "http://hl7.org/fhir/sid/icd-10-cm",
    RXNORM: "http://www.nlm.nih.gov/research/umls/rxnorm",
    LOINC: "http://loinc.org",
    ATC: "http://www.whocc.no/atc",
}

_SYSTEM_ALIASES = {
    "http://snomed.info/sct": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10,
    "http://hl7.org/fhir/sid/icd-10": ICD10,
    "urn:oid:2.16.840.1.113883.6.90": ICD10,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "http://www.icd10data.com/icd10pcs": None,
    "http://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "http://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "http://www.whocc.no/atc": ATC,
    "http://www.whocc.no/atc/": ATC,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
}

# Systems whose codes form a hierarchy readable from the code itself: prefixes are meaningful.
_PREFIX_SYSTEMS = (ICD10, ATC)


def system_key(uri: Any) -> str | None:
    if type(uri) is str and uri in _SYSTEM_ALIASES:  # a URI spelled as listed: its own entry (no spaces to strip)
        return _SYSTEM_ALIASES[uri]
    if not isinstance(uri, str):
        return None
    return _SYSTEM_ALIASES.get(uri.strip().rstrip("/")) or _SYSTEM_ALIASES.get(uri.strip())


def norm_code(sys: str, code: Any) -> str:
    if not isinstance(code, str):
        code = str(code) if isinstance(code, int) else ""
    code = code.strip()
    if sys == ICD10:
        return code.replace(".", "").replace(" ", "").upper()
    if sys == ATC:
        return code.replace(" ", "").upper()
    return code


def _norm_text(text: str) -> str:
    text = re.sub(r"\((disorder|finding|clinical|situation|morphologic abnormality)\)", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


# --------------------------------------------------------------------------------------------- categories
# Category -> [(system, code-or-prefix, is_prefix)]: the clinician-reviewed criteria/value_sets.yaml.
CATEGORIES: dict[str, list[tuple[str, str, bool]]] = criteria.value_sets()

# ATC prefixes excluded from a value set even though a broader prefix matches (knowledge §2.3).
ATC_EXCLUSIONS = {"estrogen-thrombosis-risk": ("G03AC",)}

# --------------------------------------------------------------------------------------------- ingredients
GC = "glucocorticoid"
SECOND_LINE = "second-line"
ANTI_TNF = "anti-tnf"
RITUXIMAB = "rituximab"
IG = "immune-globulin"

LADDER_TIER = {GC: 1, SECOND_LINE: 2, ANTI_TNF: 3, RITUXIMAB: 4}


@dataclass(frozen=True, slots=True)
class Ingredient:
    key: str
    drug_class: str | None  # GC / SECOND_LINE / ANTI_TNF / RITUXIMAB / IG / None (risk drugs)
    stems: tuple[str, ...]  # lower-case word starts (generic and brand names); two-word names joined
    pred_equiv: float | None = None  # B5 prednisone-equivalent factor (GC only)
    tier: int | None = None  # escalation tier for suppression (decision 6)
    groups: tuple[str, ...] = ()  # value sets this ingredient belongs to (risk drugs)


INGREDIENTS: tuple[Ingredient, ...] = (
    Ingredient("methylprednisolone", GC, ("methylprednisolone", "medrol", "solumedrol", "depomedrol"), 1.25, 1),
    Ingredient("prednisolone", GC, ("prednisolone",), 1.0, 1),
    Ingredient("prednisone", GC, ("prednisone",), 1.0, 1),
    Ingredient("dexamethasone", GC, ("dexamethasone",), 6.67, 1),
    Ingredient("hydrocortisone", GC, ("hydrocortisone",), 0.25, 1),
    Ingredient("methotrexate", SECOND_LINE, ("methotrexate", "otrexup", "rasuvo", "trexall"), tier=2),
    Ingredient("mycophenolate", SECOND_LINE, ("mycophenol", "cellcept", "myfortic"), tier=2),
    Ingredient("azathioprine", SECOND_LINE, ("azathioprine", "imuran"), tier=2),
    Ingredient("leflunomide", SECOND_LINE, ("leflunomide", "arava"), tier=2),
    Ingredient("hydroxychloroquine", SECOND_LINE, ("hydroxychloroquine", "plaquenil"), tier=2),
    # cyclophosphamide is a B2 second-line exposure but sits with anti-TNF for escalation suppression
    Ingredient("cyclophosphamide", SECOND_LINE, ("cyclophosphamide", "cytoxan"), tier=3),
    Ingredient("infliximab", ANTI_TNF, ("infliximab", "remicade", "inflectra", "renflexis", "avsola", "ixifi",
                                        "zymfentra"), tier=3),
    Ingredient("adalimumab", ANTI_TNF, ("adalimumab", "humira", "amjevita", "hadlima", "hyrimoz", "cyltezo",
                                        "yusimry", "idacio", "hulio", "yuflyma", "simlandi", "abrilada"), tier=3),
    Ingredient("etanercept", ANTI_TNF, ("etanercept", "enbrel", "erelzi", "eticovo"), tier=3),
    Ingredient("rituximab", RITUXIMAB, ("rituximab", "rituxan", "truxima", "ruxience", "riabni"), tier=4),
    Ingredient("immune globulin", IG, ("immuneglobulin", "immunoglobulin", "ivig", "igiv", "scig", "gammagard",
                                       "gamunex", "privigen", "octagam", "flebogamma", "gammaplex", "gammaked",
                                       "bivigam", "panzyga", "asceniv", "carimune", "yimmugo", "alyglo",
                                       "qivigy", "hizentra", "cuvitru", "xembify", "cutaquig", "hyqvia")),
    # risk drugs (thrombosis: estrogen; renal: nephrotoxic)
    Ingredient("estrogen", None, ("estradiol", "ethinyl", "estrogen", "premarin", "raloxifene", "tamoxifen",
                                  "estrone", "estriol", "mestranol"), groups=("estrogen-thrombosis-risk",)),
    Ingredient("nsaid", None, ("ibuprofen", "naproxen", "ketorolac", "diclofenac", "celecoxib", "indomethacin",
                               "meloxicam"), groups=("nephrotoxic-drug",)),
    Ingredient("aminoglycoside", None, ("gentamicin", "tobramycin", "amikacin", "streptomycin", "plazomicin"),
               groups=("nephrotoxic-drug",)),
    Ingredient("vancomycin", None, ("vancomycin",), groups=("nephrotoxic-drug",)),
    Ingredient("calcineurin inhibitor", None, ("cyclosporin", "ciclosporin", "tacrolimus"),
               groups=("nephrotoxic-drug",)),
    Ingredient("cisplatin", None, ("cisplatin",), groups=("nephrotoxic-drug",)),
    Ingredient("lithium", None, ("lithium",), groups=("nephrotoxic-drug",)),
    Ingredient("acyclovir", None, ("acyclovir", "aciclovir"), groups=("nephrotoxic-drug",)),
    Ingredient("polymyxin", None, ("polymyxin", "colistin"), groups=("nephrotoxic-drug",)),
)
_ING_BY_KEY = {i.key: i for i in INGREDIENTS}
_STEMS: dict[str, Ingredient] = {stem: i for i in INGREDIENTS for stem in i.stems}
_STEM_LENGTHS = tuple(sorted({len(s) for s in _STEMS}))
_WORD_RE = re.compile(r"[a-z]+")

# Hyperimmune / specific immune globulins (ATC J06BB) are not normal human immune globulin.
_HYPERIMMUNE_RE = re.compile(
    r"hepatitis|\brho|\brh\b|\brh\(|anti-?d\b|tetanus|rabies|varicella|zoster|botulism|cytomegalovirus|\bcmv|"
    r"anthrax|vaccinia|thymocyte|antivenin|antivenom|winrho|rhogam|rhophylac|hyperhep|hyperrab|hypertet|"
    r"nabi-?hb|kedrab|imogam|varizig|cytogam|\bhbig|\batg\b|botulism",
    re.IGNORECASE,
)
_SC_IG_RE = re.compile(r"subcutaneous|\bscig\b|hizentra|cuvitru|xembify|cutaquig|hyqvia|\bsubq|\bs\.?c\.?\b",
                       re.IGNORECASE)
_IV_IG_RE = re.compile(r"intravenous|\bivig\b|\bigiv\b|\bi\.?v\.?\b|injection|infusion", re.IGNORECASE)

# Medication value sets whose entries identify an ingredient through their display text.
_MED_GROUPS = ("glucocorticoid", "second-line", "third-line-anti-tnf", "other-biologic", "ivig", "scig",
               "estrogen-thrombosis-risk", "nephrotoxic-drug")
_GROUP_CLASS = {"glucocorticoid": GC, "second-line": SECOND_LINE, "third-line-anti-tnf": ANTI_TNF,
                "other-biologic": RITUXIMAB, "ivig": IG, "scig": IG}


# Memo limits. A text or concept beyond these sizes is matched without the memo: hostile input (megabyte
# texts, thousands of distinct codes) can neither grow memory nor evict much; the memos are cleared whole
# when full (clinical/memo.py).
MEMO_MAX_ENTRIES = 4096
MEMO_MAX_TEXT = 256  # characters of a text memoised by itself
MEMO_MAX_KEY = 1024  # bytes of a concept memoised by its JSON content (concept_key)


def ingredient_from_text(text: str) -> Ingredient | None:
    """The first ingredient named in ``text`` (generic or brand name at the start of a word).

    Memoised by the exact text (it depends on nothing else): the word scan is the costliest step of
    matching a medication, and the same product names come back in every request.
    """
    if not text:
        return None
    return _ingredient_from_text(text)


@by_short_text(MEMO_MAX_TEXT, maxsize=MEMO_MAX_ENTRIES)
def _ingredient_from_text(text: str) -> Ingredient | None:
    words = _WORD_RE.findall(text.lower())
    for n, word in enumerate(words):
        candidates = (word, word + words[n + 1]) if n + 1 < len(words) else (word,)
        for cand in candidates:
            for length in _STEM_LENGTHS:
                if length > len(cand):
                    break
                ing = _STEMS.get(cand[:length])
                if ing is not None:
                    if ing.drug_class == IG and _HYPERIMMUNE_RE.search(text):
                        return None
                    return ing
    return None


def ingredient(key: str) -> Ingredient:
    return _ING_BY_KEY[key]


def ingredient_class(key: str) -> str | None:
    """The drug class of an ingredient key (None: unknown or a risk drug)."""
    ing = _ING_BY_KEY.get(key)
    return ing.drug_class if ing else None


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # group or category
    system: str
    code: str  # normalised
    display: str
    verified: bool
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    name: str
    system: str
    code: str
    display: str
    verified: bool
    via: str  # "code" | "prefix" | "atc" | "text"


@dataclass(frozen=True, slots=True)  # frozen: memoised results are shared between callers
class ConceptMatch:
    names: frozenset[str]  # value sets confirmed for this concept (decision 13 applied)
    hits: tuple[Hit, ...]
    ingredient: Ingredient | None = None
    text: str = ""
    rejected: tuple[str, ...] = ()  # value sets hit only through an unverified code without partner

    @property
    def drug_class(self) -> str | None:
        if self.ingredient is not None and self.ingredient.drug_class:
            return self.ingredient.drug_class
        if not self.names:  # most concepts of a record: nothing to look up
            return None
        for group, cls in _GROUP_CLASS.items():
            if group in self.names:
                return cls
        return None

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def codes_for(self, name: str) -> list[Hit]:
        return [h for h in self.hits if h.name == name]


_EMPTY = ConceptMatch(frozenset(), ())


@dataclass
class Terminology:
    entries: list[Entry] = field(default_factory=list)
    ivig_rxnorm: frozenset[str] = frozenset()  # immutable: changed only by add_ivig_rxnorm (memos depend on it)
    _exact: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    _prefix: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    _max_prefix: int = 0
    # Memos of results that depend on this registry (see :meth:`match` and :meth:`memo`). They live on the
    # instance, so a registry built with other site codes never sees another's results, and they are
    # emptied whenever the registry changes (:meth:`add`, :meth:`add_ivig_rxnorm`).
    _match_memo: Memo = field(default_factory=lambda: Memo(MEMO_MAX_ENTRIES, register=False), repr=False,
                              compare=False)
    _med_memo: Memo = field(default_factory=lambda: Memo(MEMO_MAX_ENTRIES, register=False), repr=False,
                            compare=False)
    _memos: dict[str, Memo] = field(default_factory=dict, repr=False, compare=False)
    # the ivig_rxnorm the memos were made with: a reassigned attribute empties them
    _memo_ivig: frozenset[str] | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ building
    def clear_caches(self) -> None:
        self._match_memo.clear()
        self._med_memo.clear()
        for memo in self._memos.values():
            memo.clear()
        self._memo_ivig = self.ivig_rxnorm

    def add(self, entry: Entry) -> None:
        self.clear_caches()
        self.entries.append(entry)
        key = (entry.system, entry.code)
        if entry.prefix:
            self._prefix.setdefault(key, []).append(entry)
            self._max_prefix = max(self._max_prefix, len(entry.code))
        else:
            self._exact.setdefault(key, []).append(entry)

    def members(self, name: str) -> list[Entry]:
        return [e for e in self.entries if e.name == name]

    def value_sets(self) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = {}
        for e in self.entries:
            out.setdefault(e.name, []).append(e)
        return out

    def display_for(self, system: str, code: str) -> str | None:
        for e in self._exact.get((system, norm_code(system, code)), ()):
            return e.display
        return None

    # ------------------------------------------------------------------ matching
    def coding_hits(self, system_uri: Any, code: Any) -> list[Hit]:
        sys = system_key(system_uri)
        if sys is None:
            return []
        c = norm_code(sys, code)
        if not c:
            return []
        hits: list[Hit] = []
        for e in self._exact.get((sys, c), ()):
            hits.append(Hit(e.name, sys, c, e.display, e.verified, "atc" if sys == ATC else "code"))
        if sys in _PREFIX_SYSTEMS:
            for n in range(1, min(len(c), self._max_prefix) + 1):
                for e in self._prefix.get((sys, c[:n]), ()):
                    hits.append(Hit(e.name, sys, c, e.display, e.verified, "atc" if sys == ATC else "prefix"))
            if sys == ATC:
                hits = [h for h in hits if not any(c.startswith(x) for x in ATC_EXCLUSIONS.get(h.name, ()))]
        if sys == RXNORM and c in self.ivig_rxnorm:
            hits.append(Hit("ivig", sys, c, "site IVIG product", True, "code"))
        return hits

    def add_ivig_rxnorm(self, code: str) -> None:
        self.ivig_rxnorm = self.ivig_rxnorm | {code}
        self.clear_caches()

    def memo(self, name: str) -> Memo:
        """A memo dict named ``name`` for results derived from this registry (emptied when the registry
        changes, and here when full). Callers key it with :func:`concept_key`, store only results that
        depend on nothing but the key and this registry, and keep it under :data:`MEMO_MAX_ENTRIES`."""
        if self.ivig_rxnorm is not self._memo_ivig:
            self.clear_caches()
        memo = self._memos.get(name)
        if memo is None:
            memo = self._memos[name] = Memo(MEMO_MAX_ENTRIES, register=False)
        return memo

    def match(self, concept: Any, *, medication: bool = False) -> ConceptMatch:
        """Value sets a CodeableConcept belongs to (decision 13 enforced).

        Memoised per registry by the concept's JSON content (:func:`concept_key`): the same concepts come
        back in every request, and the result depends on nothing else. Results are frozen, so sharing is safe.
        """
        if not isinstance(concept, dict):
            return _EMPTY
        key = concept_key(concept)
        if key is None:
            return self._match(concept, medication)
        if self.ivig_rxnorm is not self._memo_ivig:
            self.clear_caches()
        memo = self._med_memo if medication else self._match_memo
        m = memo.get(key)
        if m is None:
            m = memo.remember(key, self._match(concept, medication))
        return m

    def _match(self, concept: dict[str, Any], medication: bool) -> ConceptMatch:
        hits: list[Hit] = []
        texts: list[str] = []
        t = concept.get("text")
        if isinstance(t, str) and t:
            texts.append(t)
        codings = concept.get("coding")
        if isinstance(codings, dict):
            codings = [codings]
        if isinstance(codings, list):
            for cd in codings:
                if not isinstance(cd, dict):
                    continue
                hits.extend(self.coding_hits(cd.get("system"), cd.get("code")))
                d = cd.get("display")
                if isinstance(d, str) and d:
                    texts.append(d)
        text = " | ".join(texts)
        ing: Ingredient | None = None
        if medication:
            ing = ingredient_from_text(text)
            if ing is None:  # no name in the record: derive the ingredient from a matched code's display
                for h in hits:
                    if h.verified and h.name in _MED_GROUPS:
                        ing = ingredient_from_text(h.display)
                        if ing is not None:
                            break
            if ing is not None:
                for g in ing.groups:
                    hits.append(Hit(g, "TEXT", ing.key, ing.key, True, "text"))
                if ing.drug_class == IG:
                    hits.append(Hit("immune-globulin", "TEXT", ing.key, ing.key, True, "text"))
        if not hits:
            return ConceptMatch(frozenset(), (), ing, text)
        confirmed: set[str] = set()
        pending: dict[str, list[Hit]] = {}
        for h in hits:
            if h.verified:
                confirmed.add(h.name)
            else:
                pending.setdefault(h.name, []).append(h)
        rejected: list[str] = []
        if pending:
            ntext = _norm_text(text) if text else ""
            for name, unverified in pending.items():
                if name in confirmed:
                    continue
                if ntext and any(_norm_text(h.display) and _norm_text(h.display) in ntext for h in unverified):
                    confirmed.add(name)
                elif (medication and ing is not None and name in _MED_GROUPS
                      and _GROUP_CLASS.get(name) == ing.drug_class):
                    confirmed.add(name)
                else:
                    rejected.append(name)
        if medication:
            if ("ivig" in confirmed or "scig" in confirmed) and "immune-globulin" not in confirmed:
                confirmed.add("immune-globulin")
        return ConceptMatch(frozenset(confirmed), tuple(hits), ing, text, tuple(rejected))

    def in_set(self, concept: Any, name: str, *, medication: bool = False) -> bool:
        return name in self.match(concept, medication=medication).names


# --------------------------------------------------------------------------------------------- loading
def _load_json_terminology(term: Terminology, path: Path) -> dict[tuple[str, str], bool]:
    with path.open(encoding="utf-8") as fh:
        doc = json.load(fh)
    verified: dict[tuple[str, str], bool] = {}
    for raw in doc.get("codes", []):
        sys = system_key(raw.get("system"))
        code = raw.get("code")
        if sys is None or not code:  # e.g. the IVIG RxNorm ingredient without a numeric code
            continue
        c = norm_code(sys, code)
        ok = bool(raw.get("verified"))
        key = (sys, c)
        verified[key] = verified.get(key, False) or ok
        term.add(Entry(raw.get("group", ""), sys, c, raw.get("display") or "", ok, prefix=(sys == ATC)))
    return verified


def _load_extra(term: Terminology, path: str) -> None:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        doc = yaml.safe_load(text)
    else:
        doc = json.loads(text)
    if isinstance(doc, list):
        doc = {"codes": doc}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a list of codes or a mapping with 'codes'")
    for raw in doc.get("codes") or []:
        sys = system_key(raw.get("system")) or (raw.get("system") if raw.get("system") in SYSTEM_URI else None)
        if sys is None or not raw.get("code") or not raw.get("group"):
            raise ValueError(f"{path}: entry needs group, a known system and code: {raw!r}")
        term.add(Entry(raw["group"], sys, norm_code(sys, raw["code"]), str(raw.get("display") or ""),
                       bool(raw.get("verified", True)), prefix=bool(raw.get("prefix", sys == ATC))))
    for code in doc.get("ivig_rxnorm") or []:
        term.add_ivig_rxnorm(str(code).strip())


def build_terminology(extra_codes: str | None = None) -> Terminology:
    term = Terminology()
    verified = _load_json_terminology(term, data_path("data") / "terminology.json")
    for name, members in CATEGORIES.items():
        for sys, code, is_prefix in members:
            c = norm_code(sys, code)
            display = term.display_for(sys, c) or code
            # inherit verification from terminology.json; ICD families the research names count as verified
            ok = verified.get((sys, c), sys == ICD10)
            term.add(Entry(name, sys, c, display, ok, prefix=is_prefix))
    if extra_codes:
        _load_extra(term, extra_codes)
    return term


class SiteCodes(BaseSettings):
    """Where the site's extra codes come from: ``CDS_EXTRA_CODES`` in the environment or in ``.env``."""

    model_config = SettingsConfigDict(env_prefix="CDS_", env_file=".env", extra="ignore")

    extra_codes: str | None = None


@functools.lru_cache(maxsize=1)
def get_terminology() -> Terminology:
    return build_terminology(SiteCodes().extra_codes or None)


# Non-JSON Python values (datetime, dataclass, str/int/dict subclasses) make orjson raise: no key, no memo.
_KEY_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def concept_key(concept: dict[str, Any]) -> bytes | None:
    """Memo key of a CodeableConcept: its exact JSON content (orjson), or None (do not memoise).

    Everything the memoised functions read is in the content, and the content tells ``1``, ``1.0``,
    ``true`` and ``"1"`` apart (Python's ``1 == True`` would not). Serialising is C code: cheaper than
    building a tuple key in Python. No key for a value that is not plain JSON (orjson raises), for a key
    longer than :data:`MEMO_MAX_KEY`, or for a ``coding`` that is neither an array nor absent.

    One blur remains: orjson writes NaN and infinities as ``null`` (a JSON body cannot carry them, but a
    record built in Python can). The memoised readers treat a non-finite number exactly like ``null``
    wherever it can sit (text, system, code and display are read only as strings or ints; a non-array
    element of ``coding`` is skipped) except as ``coding`` itself, which is therefore excluded here.
    """
    codings = concept.get("coding")
    if codings is not None and type(codings) is not list:
        return None
    try:
        key = orjson.dumps(concept, option=_KEY_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: not plain JSON (or nested too deep)
        return None
    return key if len(key) <= MEMO_MAX_KEY else None


def clear_caches() -> None:
    """Empty every memo of the engine and the memos of the loaded registry (cold-cache figures)."""
    clear_all()
    if get_terminology.cache_info().currsize:
        get_terminology().clear_caches()


def concept_codes(concept: Any, system: str) -> list[str]:
    """Normalised codes of one system in a CodeableConcept."""
    out: list[str] = []
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, dict):
            codings = [codings]
        for cd in codings or ():
            if isinstance(cd, dict) and system_key(cd.get("system")) == system and cd.get("code"):
                out.append(norm_code(system, cd.get("code")))
    return out


def concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    parts = []
    if isinstance(concept.get("text"), str):
        parts.append(concept["text"])
    codings = concept.get("coding")
    if isinstance(codings, dict):
        codings = [codings]
    for cd in codings or ():
        if isinstance(cd, dict) and isinstance(cd.get("display"), str):
            parts.append(cd["display"])
    return " | ".join(parts)


def concept_label(concept: Any) -> str:
    """Short human label for a concept: its text, else first display, else first code."""
    if not isinstance(concept, dict):
        return "?"
    if isinstance(concept.get("text"), str) and concept["text"]:
        return concept["text"]
    codings = concept.get("coding")
    if isinstance(codings, dict):
        codings = [codings]
    for cd in codings or ():
        if isinstance(cd, dict):
            if cd.get("display"):
                return str(cd["display"])
    for cd in codings or ():
        if isinstance(cd, dict) and cd.get("code"):
            return str(cd["code"])
    return "?"
