"""Parse a Consent once into a tree of provisions that can be matched quickly.

Parsing fails safe: what the decision point cannot interpret makes a permit match less and
a deny match more (consent/README.md, "Reading provisions").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from consent._internal.fhir import (
    Bound,
    Label,
    as_date,
    codes_in,
    coding_pairs,
    items,
    literal,
    logical,
    mapping,
    parse_bound,
    text,
)
from consent.constants import (
    CONSENT_ACTION,
    CONSENT_DOMAIN,
    CONSENT_SCOPE,
    DEFAULT_DOMAIN,
    DNR,
    ENH,
    FNR,
    HPR,
    PATIENT_PRIVACY,
    RESOURCE_TYPES,
)
from consent.errors import InvalidRequest

ActorKey = tuple[str, str]
"""How a provision names an actor: ("Organization", id), ("enh", orgnr), ("hpr", nr), ..."""

_ACTOR_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole"})
_LOGICAL_KIND = {ENH: "enh", HPR: "hpr", FNR: "pid", DNR: "pid"}
_INSTANCE_MEANINGS = frozenset({"instance", "related", "dependents"})


@dataclass(frozen=True, slots=True)
class Node:
    """One provision: its conditions (None = unrestricted) and its nested exceptions."""

    path: str
    permit: bool
    never: bool
    actor_keys: frozenset[ActorKey] | None
    names_actor: bool
    actions: frozenset[str] | None
    period: tuple[Bound | None, Bound | None] | None
    classes: frozenset[str] | None
    labels: frozenset[Label] | None
    codes: frozenset[Label] | None
    data: frozenset[str] | None
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class CompiledConsent:
    """The parts of one Consent the rules look at, parsed once."""

    consent_id: str | None
    reference: str
    resource: Mapping[str, Any]
    status: str | None
    patient: tuple[str, str] | None
    patient_text: str
    scope_ok: bool
    domains: tuple[str, ...]
    performers: tuple[ActorKey, ...]
    performer_texts: tuple[str, ...]
    root: Node | None
    root_error: str | None
    period_text: tuple[str | None, str | None]
    period: tuple[Bound | None, Bound | None] | None
    period_error: str | None
    signed: date | None
    has_signed_form: bool
    named: frozenset[ActorKey]


def actor_key(reference: Any) -> ActorKey | None:
    """Return how a Reference names an Organization, Practitioner or PractitionerRole."""
    lit = literal(reference)
    if lit is not None:
        return lit if lit[0] in _ACTOR_TYPES else None
    ident = logical(reference)
    if ident is None:
        return None
    kind = _LOGICAL_KIND.get(ident[0])
    return (kind, ident[1]) if kind is not None else None


def _period(value: Any) -> tuple[Bound | None, Bound | None]:
    period = mapping(value)
    if period is None:
        raise ValueError("period is not an object")
    start = parse_bound(period["start"], end=False) if "start" in period else None
    end = parse_bound(period["end"], end=True) if "end" in period else None
    return start, end


def _node(element: Mapping[str, Any], path: str, *, root: bool) -> Node:
    kind = element.get("type")
    permit = kind == "permit"
    if kind not in ("permit", "deny") and root:
        raise InvalidRequest("the root provision has no type (permit or deny)")
    # Nested provisions without a readable type are taken as denies: an exception we cannot
    # read must not widen what its parent grants.
    never = False

    actor_keys: frozenset[ActorKey] | None = None
    names_actor = False
    actors = items(element.get("actor"))
    if actors:
        keys = [actor_key((mapping(a) or {}).get("reference")) for a in actors]
        known = frozenset(k for k in keys if k is not None)
        if permit or len(known) == len(keys):
            actor_keys = known
            names_actor = not permit
        # else: a deny naming someone we cannot resolve (a CareTeam, a Group) applies to all

    actions: frozenset[str] | None = None
    if "action" in element:
        found = codes_in(element.get("action"), CONSENT_ACTION)
        if found or permit:
            actions = found
        # else: a deny with only unknown action codes applies to every action

    period: tuple[Bound | None, Bound | None] | None = None
    if "period" in element and not root:
        try:
            period = _period(element["period"])
        except (ValueError, TypeError, KeyError):
            never = permit  # an unreadable window: a permit never applies, a deny always does

    classes: frozenset[str] | None = None
    if "class" in element:
        pairs = list(coding_pairs(element.get("class")))
        types = frozenset(code for sys, code in pairs if sys in ("", RESOURCE_TYPES))
        if permit or len(types) == len(pairs):
            classes = types

    labels = frozenset(coding_pairs(element.get("securityLabel"))) or None
    codes = frozenset(coding_pairs(element.get("code"))) or None

    data: frozenset[str] | None = None
    entries = items(element.get("data"))
    if entries:
        refs: set[str] = set()
        exact = True
        for entry in entries:
            ent = mapping(entry) or {}
            target = literal(ent.get("reference"))
            if ent.get("meaning") in _INSTANCE_MEANINGS and target is not None:
                refs.add(f"{target[0]}/{target[1]}")
            if ent.get("meaning") != "instance" or target is None:
                exact = False
        if permit or exact:
            data = frozenset(refs)
        # else: a deny on related or authored data would need I/O to follow references,
        # so it applies without the data restriction

    if "dataPeriod" in element and permit:
        never = True  # dataPeriod is not interpreted; a permit limited by it grants nothing

    children = tuple(
        _node(child, f"{path}.provision[{i}]", root=False)
        for i, child in enumerate(items(element.get("provision")))
        if mapping(child) is not None
    )
    return Node(
        path=path,
        permit=permit,
        never=never,
        actor_keys=actor_keys,
        names_actor=names_actor,
        actions=actions,
        period=period,
        classes=classes,
        labels=labels,
        codes=codes,
        data=data,
        children=children,
    )


def _all_actor_keys(node: Node) -> set[ActorKey]:
    found = set(node.actor_keys or ())
    for child in node.children:
        found |= _all_actor_keys(child)
    return found


def compile_consent(resource: Mapping[str, Any]) -> CompiledConsent:
    """Parse a Consent resource (any content) into a CompiledConsent."""
    consent_id = text(resource.get("id"))
    reference = f"Consent/{consent_id}" if consent_id else "Consent (new)"
    scope_ok = (CONSENT_SCOPE, PATIENT_PRIVACY) in set(coding_pairs(resource.get("scope")))
    domains = tuple(sorted(codes_in(resource.get("category"), CONSENT_DOMAIN))) or (DEFAULT_DOMAIN,)
    patient_elt = mapping(resource.get("patient")) or {}

    performers: list[ActorKey] = []
    performer_texts: list[str] = []
    for perf in items(resource.get("performer")):
        lit = literal(perf)
        ident = logical(perf)
        if lit is not None:
            performers.append(lit)
            performer_texts.append(f"{lit[0]}/{lit[1]}")
        elif ident is not None and ident[0] in (FNR, DNR):
            performers.append(("pid", ident[1]))
            performer_texts.append("a person identified by fødselsnummer")
        else:
            performers.append(("unresolved", ""))
            performer_texts.append("an unresolved performer")

    root: Node | None = None
    root_error: str | None = None
    prov = mapping(resource.get("provision"))
    if prov is None:
        root_error = "it has no provision, so it grants nothing"
    else:
        try:
            root = _node(prov, "Consent.provision", root=True)
        except InvalidRequest as exc:
            root_error = str(exc)

    period: tuple[Bound | None, Bound | None] | None = None
    period_error: str | None = None
    period_text: tuple[str | None, str | None] = (None, None)
    if prov is not None and "period" in prov:
        raw = mapping(prov.get("period")) or {}
        period_text = (text(raw.get("start")), text(raw.get("end")))
        try:
            period = _period(prov["period"])
        except (ValueError, TypeError, KeyError):
            period_error = "provision.period cannot be read"

    signed: date | None = None
    try:
        if "dateTime" in resource:
            signed = as_date(parse_bound(resource["dateTime"], end=False))
    except ValueError:
        signed = None

    form = mapping(resource.get("sourceAttachment"))
    has_form = form is not None and (text(form.get("data")) or text(form.get("url"))) is not None

    named = _all_actor_keys(root) if root is not None else set()
    for org in items(resource.get("organization")):
        key = actor_key(org)
        if key is not None:
            named.add(key)

    return CompiledConsent(
        consent_id=consent_id,
        reference=reference,
        resource=resource,
        status=text(resource.get("status")),
        patient=literal(patient_elt),
        patient_text=text(patient_elt.get("reference")) or "no patient",
        scope_ok=scope_ok,
        domains=domains,
        performers=tuple(performers),
        performer_texts=tuple(performer_texts),
        root=root,
        root_error=root_error,
        period_text=period_text,
        period=period,
        period_error=period_error,
        signed=signed,
        has_signed_form=has_form,
        named=frozenset(named),
    )
