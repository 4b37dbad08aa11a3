"""The stafettlogg example files follow docs/stafettlogg-fhir.md.

Every file in examples/stafettlogg/ must parse with the R4B model of its resourceType, use only
codes valid in R4 required bindings, carry valid Norwegian identifiers and use only the Stafett
codes listed in the document. The transaction Bundle is also checked as a whole: requests,
urn:uuid references, the Consent rules (C1-C11), levels, the stafettholder and the measures.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "stafettlogg"
DOC = ROOT / "docs" / "stafettlogg-fhir.md"
SPEC = ROOT / "service" / "fhir" / "spec" / "r4.json"
FILES = sorted(EXAMPLES.glob("*.json"))
SINGLE_FILES = [p for p in FILES if p.name != "demo-transaction.json"]

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR = "urn:oid:2.16.578.1.12.4.1.4.2"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"
STAFETT_CS = "https://stafett.no/fhir/CodeSystem/"
STAFETT_SD = "https://stafett.no/fhir/StructureDefinition/"
LEVEL_EXT = STAFETT_SD + "bti-level"
PARENTAL = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
RESPONSIBLE = {"felles", "mor", "far", "medmor", "andre"}  # "ukjent" grants nothing
IRCP = ("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP")
CONSENT_ACTIONS = {"access", "collect", "correct"}
LOG_TYPES = {"CarePlan", "CareTeam", "Goal", "Task", "Communication"}
# R4 ConsentState without "proposed", which Stafett does not use (doc rule C1)
CONSENT_STATES = {"draft", "active", "rejected", "inactive", "entered-in-error"}
RELATIVE_REF = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")
UUID_REF = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

Json = dict[str, Any]


def load(path: Path) -> Json:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- identifiers (local mod-11)


def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """Return the mod-11 check digit, or None when the remainder makes the number invalid."""
    rest = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    if rest == 11:
        return 0
    return None if rest == 10 else rest


def valid_person_number(value: str) -> bool:
    """Fødselsnummer / D-nummer: 11 digits, both check digits right."""
    if not re.fullmatch(r"\d{11}", value):
        return False
    k1 = _mod11(value[:9], (3, 7, 6, 1, 8, 9, 4, 5, 2))
    if k1 is None or k1 != int(value[9]):
        return False
    k2 = _mod11(value[:10], (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
    return k2 is not None and k2 == int(value[10])


def valid_orgnr(value: str) -> bool:
    """Organisasjonsnummer: 9 digits, check digit with weights 3 2 7 6 5 4 3 2."""
    if not re.fullmatch(r"\d{9}", value):
        return False
    check = _mod11(value[:8], (3, 2, 7, 6, 5, 4, 3, 2))
    return check is not None and check == int(value[8])


def birth_date_of_synthetic_fnr(value: str) -> date:
    """Birth date of a synthetic fødselsnummer (month + 80)."""
    day, month, year2, individual = (
        int(value[0:2]),
        int(value[2:4]) - 80,
        int(value[4:6]),
        int(value[6:9]),
    )
    if individual < 500 or (individual >= 900 and year2 >= 40):
        century = 1900
    elif year2 < 40:
        century = 2000
    else:
        century = 1800
    return date(century + year2, month, day)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("15832151200", True),
        ("15832151201", False),
        ("1583215120", False),
        ("abcdefghijk", False),
    ],
)
def test_person_number_check(value: str, expected: bool) -> None:
    assert valid_person_number(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("912837467", True), ("912837468", False), ("91283746", False)],
)
def test_orgnr_check(value: str, expected: bool) -> None:
    assert valid_orgnr(value) is expected


# ---------------------------------------------------------------- generic walkers


def walk(node: Any) -> Iterator[Json]:
    """Yield every JSON object in a document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def references(node: Any) -> list[str]:
    return [obj["reference"] for obj in walk(node) if isinstance(obj.get("reference"), str)]


def codings(node: Any) -> list[Json]:
    return [
        obj
        for obj in walk(node)
        if isinstance(obj.get("system"), str) and isinstance(obj.get("code"), str)
    ]


def identifiers(node: Any) -> list[Json]:
    return [
        obj
        for obj in walk(node)
        if isinstance(obj.get("system"), str) and isinstance(obj.get("value"), str)
    ]


def coded(concept: Json | None, system: str) -> set[str]:
    if not concept:
        return set()
    return {c["code"] for c in concept.get("coding", []) if c.get("system") == system}


def documented_codes() -> dict[tuple[str, str], str]:
    """(system, code) -> display from the code table at the end of the mapping document."""
    row = re.compile(
        r"^\|\s*`(https://stafett\.no/fhir/CodeSystem/[^`]+)`\s*\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|"
    )
    table: dict[tuple[str, str], str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = row.match(line)
        if match:
            table[(match.group(1), match.group(2))] = match.group(3)
    return table


# ---------------------------------------------------------------- required bindings (R4 spec data)


def _spec() -> Json:
    if not SPEC.exists():
        pytest.skip("service/fhir/spec/r4.json not present")
    return json.loads(SPEC.read_text(encoding="utf-8"))


def _lookup(spec: Json, type_name: str, path: str, key: str) -> tuple[Json, str, str | None] | None:
    elements = spec["elements"].get(type_name, {})
    element = elements.get(f"{path}.{key}")
    if element is not None:
        types = element.get("types", [])
        return element, f"{path}.{key}", types[0] if len(types) == 1 else None
    for elem_path, candidate in elements.items():
        if not elem_path.endswith("[x]") or elem_path.rsplit(".", 1)[0] != path:
            continue
        base = elem_path.rsplit(".", 1)[1][:-3]
        if key.startswith(base) and len(key) > len(base):
            suffix = key[len(base) :]
            for type_code in candidate.get("types", []):
                if type_code.lower() == suffix.lower():
                    return candidate, elem_path, type_code
    return None


def _binding_problems(spec: Json, value_set: str, value: Any, where: str) -> list[str]:
    if value_set in spec.get("notEnumerable", {}):
        if value_set.endswith("/mimetypes") and isinstance(value, str):
            ok = re.fullmatch(r"[\w.+-]+/[\w.+-]+(;.*)?", value) is not None
            return [] if ok else [f"{where}: {value!r} is not a MIME type"]
        return []
    systems: dict[str, list[str]] = spec["valueSets"].get(value_set, {})
    if not systems:
        return []
    if isinstance(value, str):
        allowed = {code for codes in systems.values() for code in codes}
        return [] if value in allowed else [f"{where}: {value!r} not in {value_set}"]
    found = [value] if "code" in value else value.get("coding", [])
    if any(c.get("code") in systems.get(c.get("system", ""), []) for c in found):
        return []
    return [f"{where}: no coding from {value_set}"]


def required_binding_problems(spec: Json, node: Json, type_name: str, path: str) -> list[str]:
    problems: list[str] = []
    for key, value in node.items():
        if key == "resourceType" or key.startswith("_"):
            continue
        found = _lookup(spec, type_name, path, key)
        if found is None:
            continue
        element, elem_path, type_code = found
        binding = element.get("binding", {})
        for item in value if isinstance(value, list) else [value]:
            if binding.get("strength") == "required":
                problems += _binding_problems(spec, binding["valueSet"], item, elem_path)
            if not isinstance(item, dict):
                continue
            if "resourceType" in item:
                rt = item["resourceType"]
                problems += required_binding_problems(spec, item, rt, rt)
            elif "contentReference" in element:
                problems += required_binding_problems(
                    spec, item, type_name, element["contentReference"].lstrip("#")
                )
            elif type_code in spec["elements"] and type_code not in ("BackboneElement", "Element"):
                problems += required_binding_problems(spec, item, type_code, type_code)
            else:
                problems += required_binding_problems(spec, item, type_name, elem_path)
    return problems


# ---------------------------------------------------------------- per-file checks


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_parses_with_r4b_model(path: Path) -> None:
    data = load(path)
    model = get_fhir_model_class(data["resourceType"])
    model.model_validate(data)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_only_codes_of_required_bindings(path: Path) -> None:
    spec = _spec()
    data = load(path)
    rt = data["resourceType"]
    assert required_binding_problems(spec, data, rt, rt) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_norwegian_identifiers_are_valid_and_synthetic(path: Path) -> None:
    for ident in identifiers(load(path)):
        if ident["system"] in (FNR, DNR):
            assert valid_person_number(ident["value"]), ident
            # synthetic convention: month + 80, so it can never be a real person
            assert 81 <= int(ident["value"][2:4]) <= 92, ident
        elif ident["system"] == ORGNR:
            assert valid_orgnr(ident["value"]), ident
        elif ident["system"] == HPR:
            assert re.fullmatch(r"\d{6,9}", ident["value"]), ident


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_stafett_codes_are_documented(path: Path) -> None:
    table = documented_codes()
    assert table, "no code table found in docs/stafettlogg-fhir.md"
    doc_text = DOC.read_text(encoding="utf-8")
    data = load(path)
    for c in codings(data):
        if c["system"].startswith(STAFETT_CS):
            key = (c["system"], c["code"])
            assert key in table, f"{key} is not in the code table"
            if "display" in c:
                assert c["display"] == table[key], key
    for obj in walk(data):
        url = obj.get("url")
        if isinstance(url, str) and url.startswith(STAFETT_SD):
            assert f"`{url}`" in doc_text, url


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_persons_birth_date_and_gender_match_fnr(path: Path) -> None:
    data = load(path)
    resources = (
        [e["resource"] for e in data["entry"]] if data["resourceType"] == "Bundle" else [data]
    )
    for res in resources:
        if res["resourceType"] not in ("Patient", "RelatedPerson", "Practitioner"):
            continue
        for ident in res.get("identifier", []):
            if ident["system"] != FNR:
                continue
            if "birthDate" in res:
                born = birth_date_of_synthetic_fnr(ident["value"]).isoformat()
                assert res["birthDate"] == born, res.get("id")
            if res.get("gender") in ("male", "female"):
                odd = int(ident["value"][8]) % 2 == 1
                assert (res["gender"] == "male") is odd, res.get("id")


@pytest.mark.parametrize("path", SINGLE_FILES, ids=lambda p: p.name)
def test_single_files_use_relative_references(path: Path) -> None:
    data = load(path)
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", data.get("id", "")), "needs an id"
    for ref in references(data):
        assert RELATIVE_REF.match(ref), ref


# ---------------------------------------------------------------- rules shared by bundle and files

Resolver = Callable[[str], Json | None]


def check_consent(consent: Json, resolve: Resolver | None = None) -> None:
    """Check the Consent rules C1-C11 of docs/stafettlogg-fhir.md section 13."""
    assert consent["status"] in CONSENT_STATES  # C1
    assert "patient-privacy" in coded(
        consent["scope"], "http://terminology.hl7.org/CodeSystem/consentscope"
    )  # C2
    assert any("59284-0" in coded(c, "http://loinc.org") for c in consent["category"])  # C3
    patient_ref = consent["patient"]["reference"]  # C4 (ppc-2)
    assert patient_ref.startswith(("Patient/", "urn:uuid:"))
    assert "OPTIN" in coded(
        consent.get("policyRule"), "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    )  # C5 (ppc-1)
    assert consent.get("dateTime")  # C6
    performers = consent.get("performer", [])  # C7
    assert performers
    for performer in performers:
        ref = performer["reference"]
        if ref == patient_ref:
            continue  # the youth consents alone
        if resolve is None:
            assert ref.startswith("RelatedPerson/"), ref
            continue
        guardian = resolve(ref)
        assert guardian is not None, f"performer {ref} is not in the bundle"
        assert guardian["resourceType"] == "RelatedPerson"
        assert guardian.get("active") is True
        assert guardian["patient"]["reference"] == patient_ref
        responsibility = codes_in(guardian["relationship"], PARENTAL)
        assert responsibility & RESPONSIBLE, "performer has no parental responsibility"
    assert consent.get("organization")  # C8
    attachment = consent["sourceAttachment"]  # C9
    assert attachment["contentType"] == "application/pdf"
    assert attachment.get("data") or attachment.get("url")
    if "data" in attachment:
        pdf = base64.b64decode(attachment["data"], validate=True)
        assert pdf.startswith(b"%PDF-")
        if "size" in attachment:
            assert attachment["size"] == len(pdf)
        if "hash" in attachment:
            digest = hashlib.sha1(pdf).digest()  # FHIR R4 Attachment.hash is SHA-1
            assert base64.b64decode(attachment["hash"]) == digest
    provision = consent["provision"]  # C10
    assert provision["type"] == "permit"
    assert provision["period"]["start"]
    assert provision["period"]["end"], "provision.period.end is the expiry"
    assert provision["period"]["start"] < provision["period"]["end"]
    check_actors(provision)
    for action in provision.get("action", []):
        assert coded(action, "http://terminology.hl7.org/CodeSystem/consentaction") <= (
            CONSENT_ACTIONS
        )
    classes = {c["code"] for c in provision.get("class", [])}
    assert classes
    assert classes <= LOG_TYPES
    for c in provision["class"]:
        assert c["system"] == "http://hl7.org/fhir/resource-types"
    for nested in provision.get("provision", []):  # C11
        assert nested["type"] == "deny"
        assert "provision" not in nested, "exceptions are one level deep"
        check_actors(nested)


def check_actors(provision: Json) -> None:
    for actor in provision.get("actor", []):
        role = actor["role"]
        assert IRCP[1] in coded(role, IRCP[0])
        reference = actor["reference"]
        if "reference" in reference:
            ref = reference["reference"]
            assert ref.startswith(
                ("Organization/", "Practitioner/", "PractitionerRole/", "urn:uuid:")
            ), ref
        else:
            assert reference["identifier"]["system"] in (ORGNR, HPR)


@pytest.mark.parametrize(
    "path", [p for p in SINGLE_FILES if p.name.startswith("consent")], ids=lambda p: p.name
)
def test_consent_files_follow_the_rules(path: Path) -> None:
    check_consent(load(path))


def test_withdrawn_consent_is_inactive() -> None:
    withdrawn = load(EXAMPLES / "consent-withdrawn.json")
    assert withdrawn["status"] == "inactive"
    assert withdrawn["meta"]["lastUpdated"]


def codes_in(concepts: list[Json], system: str) -> set[str]:
    return set().union(*(coded(c, system) for c in concepts))


def stafettholders(careteam: Json) -> list[Json]:
    return [
        p
        for p in careteam["participant"]
        if "stafettholder" in codes_in(p["role"], STAFETT_CS + "careteam-role")
    ]


def test_handover_keeps_history_with_one_current_holder() -> None:
    careteam = load(EXAMPLES / "careteam-handover.json")
    holders = stafettholders(careteam)
    current = [p for p in holders if "end" not in p["period"]]
    finished = [p for p in holders if "end" in p["period"]]
    assert len(current) == 1
    assert finished
    assert all(p["period"]["end"] <= current[0]["period"]["start"] for p in finished)


def test_hidden_from_guardians_label() -> None:
    note = load(EXAMPLES / "communication-hidden-from-guardians.json")
    labels = {(c["system"], c["code"]) for c in note["meta"]["security"]}
    assert (STAFETT_CS + "security-label", "hidden-from-guardians") in labels


def test_provenance_points_at_a_version_and_a_source_record() -> None:
    provenance = load(EXAMPLES / "provenance-connector.json")
    assert all("/_history/" in t["reference"] for t in provenance["target"])
    source = [e for e in provenance["entity"] if e["role"] == "source"]
    assert source
    assert source[0]["what"]["identifier"]["system"].startswith("https://stafett.no/fhir/sid/")
    measure = load(EXAMPLES / "task-measure.json")
    assert source[0]["what"]["identifier"] in measure["identifier"]


# ---------------------------------------------------------------- the demo transaction


@pytest.fixture(scope="module")
def bundle() -> Json:
    return load(EXAMPLES / "demo-transaction.json")


@pytest.fixture(scope="module")
def by_url(bundle: Json) -> dict[str, Json]:
    return {e["fullUrl"]: e["resource"] for e in bundle["entry"]}


def systems_of(resource: Json) -> set[str]:
    return {i["system"] for i in resource.get("identifier", [])}


def of_type(bundle: Json, resource_type: str) -> list[tuple[str, Json]]:
    return [
        (e["fullUrl"], e["resource"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == resource_type
    ]


def test_bundle_is_a_transaction_of_posts(bundle: Json) -> None:
    assert bundle["type"] == "transaction"
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    for entry in bundle["entry"]:
        assert UUID_REF.match(entry["fullUrl"]), entry["fullUrl"]
        request = entry["request"]
        assert request["method"] == "POST"
        assert request["url"] == entry["resource"]["resourceType"]
        assert "id" not in entry["resource"]


def test_bundle_conditional_creates_on_identifier(bundle: Json) -> None:
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] not in ("Organization", "Patient", "Practitioner"):
            continue
        condition = entry["request"].get("ifNoneExist", "")
        assert condition.startswith("identifier="), resource["resourceType"]
        system, _, value = condition.removeprefix("identifier=").partition("|")
        assert {"system": system, "value": value} in resource["identifier"]


def test_bundle_references_resolve(bundle: Json, by_url: dict[str, Json]) -> None:
    for ref in references(bundle):
        assert UUID_REF.match(ref), f"{ref} is not an urn:uuid reference"
        assert ref in by_url, f"{ref} does not resolve to an entry"


def test_bundle_contents(bundle: Json) -> None:
    counts: dict[str, int] = {}
    for entry in bundle["entry"]:
        rt = entry["resource"]["resourceType"]
        counts[rt] = counts.get(rt, 0) + 1
    assert counts["Organization"] >= 3
    assert counts["Practitioner"] == 2
    assert counts["PractitionerRole"] == 2
    assert counts["Patient"] == 1
    assert counts["RelatedPerson"] == 2
    assert counts["Consent"] == 1
    assert counts["CarePlan"] == 1
    assert counts["CareTeam"] == 1
    assert counts["Goal"] >= 1
    assert counts["Communication"] == 3
    with_hpr = [p for _, p in of_type(bundle, "Practitioner") if HPR in systems_of(p)]
    assert len(with_hpr) == 1, "the nurse has an HPR number, the teacher has none"


def test_bundle_guardians_share_parental_responsibility(bundle: Json) -> None:
    ((patient_url, _),) = of_type(bundle, "Patient")
    for _, guardian in of_type(bundle, "RelatedPerson"):
        assert guardian["patient"]["reference"] == patient_url
        responsibility = codes_in(guardian["relationship"], PARENTAL)
        assert responsibility == {"felles"}


def test_bundle_consent(bundle: Json, by_url: dict[str, Json]) -> None:
    ((_, consent),) = of_type(bundle, "Consent")
    check_consent(consent, by_url.get)
    assert consent["provision"]["period"]["end"] == "2027-11-01"
    permitted = {a["reference"]["reference"] for a in consent["provision"]["actor"]}
    types = {
        code
        for url in permitted
        for code in coded(by_url[url]["type"][0], STAFETT_CS + "service-type")
    }
    assert types == {"barnehage", "helsestasjon"}
    assert len(consent["provision"]["provision"]) == 1


def _performer_without_responsibility(consent: Json, resources: dict[str, Json]) -> None:
    guardian = resources[consent["performer"][0]["reference"]]
    guardian["relationship"][1]["coding"][0]["code"] = "ukjent"


def _performer_is_organisation(consent: Json, resources: dict[str, Json]) -> None:
    consent["performer"] = [consent["organization"][0]]


def _no_expiry(consent: Json, resources: dict[str, Json]) -> None:
    del consent["provision"]["period"]["end"]


def _no_policy_rule(consent: Json, resources: dict[str, Json]) -> None:
    del consent["policyRule"]


def _nested_permit(consent: Json, resources: dict[str, Json]) -> None:
    consent["provision"]["provision"][0]["type"] = "permit"


def _actor_not_recipient(consent: Json, resources: dict[str, Json]) -> None:
    consent["provision"]["actor"][0]["role"]["coding"][0]["code"] = "PRCP"


def _wrong_hash(consent: Json, resources: dict[str, Json]) -> None:
    consent["sourceAttachment"]["hash"] = base64.b64encode(b"x" * 20).decode()


def _no_form(consent: Json, resources: dict[str, Json]) -> None:
    del consent["sourceAttachment"]


@pytest.mark.parametrize(
    "mutate",
    [
        _performer_without_responsibility,
        _performer_is_organisation,
        _no_expiry,
        _no_policy_rule,
        _nested_permit,
        _actor_not_recipient,
        _wrong_hash,
        _no_form,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_consent_rules_reject_broken_consents(
    bundle: Json, mutate: Callable[[Json, dict[str, Json]], None]
) -> None:
    resources = copy.deepcopy({e["fullUrl"]: e["resource"] for e in bundle["entry"]})
    consent = next(r for r in resources.values() if r["resourceType"] == "Consent")
    mutate(consent, resources)
    with pytest.raises((AssertionError, KeyError)):
        check_consent(consent, resources.get)


def test_bundle_careplan_and_level(bundle: Json, by_url: dict[str, Json]) -> None:
    ((plan_url, plan),) = of_type(bundle, "CarePlan")
    assert "stafettlogg" in codes_in(plan["category"], STAFETT_CS + "log-category")
    assert plan["intent"] == "plan"
    assert plan["status"] == "active"
    assert plan["description"].startswith("Oppmerksomhet")
    (level_ext,) = [e for e in plan["extension"] if e["url"] == LEVEL_EXT]
    assert level_ext["valueCoding"]["system"] == STAFETT_CS + "bti-level"
    level_tasks = [
        t
        for _, t in of_type(bundle, "Task")
        if coded(t["code"], STAFETT_CS + "task-type") == {"bti-level"}
    ]
    assert all(t["basedOn"] == [{"reference": plan_url}] for t in level_tasks)
    running = [t for t in level_tasks if t["status"] == "in-progress"]
    assert len(running) == 1
    (level_input,) = running[0]["input"]
    assert coded(level_input["valueCodeableConcept"], STAFETT_CS + "bti-level") == {
        level_ext["valueCoding"]["code"]
    }
    assert level_ext["valueCoding"]["code"] == "2"
    outcomes = {
        code
        for t in level_tasks
        if t["status"] == "completed"
        for out in t["output"]
        for code in coded(out["valueCodeableConcept"], STAFETT_CS + "bti-level-outcome")
    }
    assert "change-level" in outcomes
    for goal in plan["goal"]:
        assert by_url[goal["reference"]]["resourceType"] == "Goal"


def test_bundle_stafettholder(bundle: Json, by_url: dict[str, Json]) -> None:
    ((careteam_url, careteam),) = of_type(bundle, "CareTeam")
    ((_, plan),) = of_type(bundle, "CarePlan")
    assert plan["careTeam"] == [{"reference": careteam_url}]
    current = [p for p in stafettholders(careteam) if "end" not in p["period"]]
    assert len(current) == 1
    holder = current[0]["member"]["reference"]
    assert by_url[holder]["resourceType"] == "PractitionerRole"
    assert plan["author"]["reference"] == holder, "CarePlan.author mirrors the stafettholder"
    for participant in careteam["participant"]:
        assert "onBehalfOf" not in participant  # ctm-1
        member = by_url[participant["member"]["reference"]]
        assert member["resourceType"] in ("PractitionerRole", "Organization")


def test_bundle_measures(bundle: Json, by_url: dict[str, Json]) -> None:
    ((plan_url, _),) = of_type(bundle, "CarePlan")
    ((patient_url, _),) = of_type(bundle, "Patient")
    measures = [
        t
        for _, t in of_type(bundle, "Task")
        if coded(t["code"], STAFETT_CS + "task-type") == {"measure"}
    ]
    assert len(measures) == 3
    for task in measures:
        assert task["intent"] == "plan"
        assert task["basedOn"] == [{"reference": plan_url}]
        assert task["for"]["reference"] == patient_url
        assert by_url[task["owner"]["reference"]]["resourceType"] == "Organization"
        assert by_url[task["requester"]["reference"]]["resourceType"] == "PractitionerRole"
        assert task["description"]
        assert task["executionPeriod"]["start"]
        evaluation_date = task["restriction"]["period"]["end"]
        assert date.fromisoformat(evaluation_date)
        evaluations = [
            o
            for o in task.get("output", [])
            if "evaluation" in coded(o["type"], STAFETT_CS + "task-parameter")
        ]
        if task["status"] == "completed":
            assert evaluations, "a completed measure has its evaluation"
            assert task["executionPeriod"].get("end")
        else:
            assert "end" not in task["executionPeriod"]
        for output in evaluations:
            assert output["valueAnnotation"]["text"]
            assert output["valueAnnotation"]["time"]
    assert any(t["status"] == "completed" for t in measures)


def test_bundle_communications(bundle: Json, by_url: dict[str, Json]) -> None:
    ((plan_url, _),) = of_type(bundle, "CarePlan")
    ((patient_url, _),) = of_type(bundle, "Patient")
    categories = set()
    for _, comm in of_type(bundle, "Communication"):
        (category,) = comm["category"]
        codes = coded(category, STAFETT_CS + "communication-category")
        assert len(codes) == 1
        categories |= codes
        assert comm["basedOn"] == [{"reference": plan_url}]
        assert comm["subject"]["reference"] == patient_url
        assert comm["sent"]
        assert comm["sender"]["reference"] in by_url
        assert comm["payload"][0]["contentString"]
        if codes == {"meeting"}:
            assert comm["recipient"]
    assert categories == {"note", "meeting", "lysglimt"}
