"""Match a request against the provision trees of the valid Consents.

Two evaluators share one set of conditions: an exact one for a known resource (the hot path,
once per search hit) and a three-valued one for type-level questions, where a condition on
the resource's content is unknown. The three-valued one computes which outcomes are
*possible* and which are *certain*, so type-level answers never under-approximate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any

from consent._internal.consents import ActorKey, CompiledConsent, Node, compile_consent
from consent._internal.context import LogContext, actor_named
from consent._internal.fhir import Label, coding_pairs, items, literal, not_passed, reached, text
from consent.constants import (
    ACTION_ACCESS,
    ACTION_COLLECT,
    ACTION_CORRECT,
    IDENTITY_TYPES,
    LOG_CONTENT_TYPES,
    LOG_RESOURCE_TYPES,
)
from consent.model import Action, Actor, ActorKind, Basis

CODES: dict[Action, tuple[str, ...]] = {
    Action.READ: (ACTION_ACCESS,),
    Action.WRITE: (ACTION_COLLECT, ACTION_CORRECT),
    Action.DELETE: (ACTION_COLLECT, ACTION_CORRECT),
    Action.DELIVER: (ACTION_COLLECT,),
}
_CODED_ELEMENTS = ("code", "category", "type")
_PROVENANCE_TARGETS = LOG_RESOURCE_TYPES - {"Provenance"}


class Mode(Enum):
    """How unknown resource content is treated."""

    EXACT = "exact"
    POSSIBLE = "possible"
    CERTAIN = "certain"


@dataclass(frozen=True, slots=True)
class Probe:
    """What is known about the resource asked about."""

    rtype: str
    labels: frozenset[Label] | None
    resource: Mapping[str, Any] | None
    instance: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """An internal decision before it is worded."""

    permitted: bool
    basis: Basis
    consent: CompiledConsent | None = None
    node: Node | None = None
    via: str = ""


@lru_cache(maxsize=4096)
def actor_keys(actor: Actor) -> frozenset[ActorKey]:
    """Return every way a provision may name this actor."""
    keys: set[ActorKey] = {("Organization", i) for i in actor.organization_ids}
    if actor.organization_number:
        keys.add(("enh", actor.organization_number.strip()))
    if actor.kind is ActorKind.PRACTITIONER:
        keys.update(("Practitioner", i) for i in actor.practitioner_ids)
        keys.update(("PractitionerRole", i) for i in actor.practitioner_role_ids)
        if actor.hpr:
            keys.add(("hpr", actor.hpr.strip()))
        if actor.pid:
            keys.add(("pid", actor.pid.strip()))
    return frozenset(keys)


def probe_for(
    rtype: str, resource: Mapping[str, Any] | None, labels: frozenset[Label] | None
) -> Probe:
    """Describe the resource of a request."""
    instance = None
    if resource is not None:
        rid = text(resource.get("id"))
        instance = f"{rtype}/{rid}" if rid else None
    return Probe(rtype, labels, resource, instance)


def _resource_codes(resource: Mapping[str, Any]) -> frozenset[Label]:
    return frozenset(
        pair for element in _CODED_ELEMENTS for pair in coding_pairs(resource.get(element))
    )


def _fixed(node: Node, probe: Probe, keys: frozenset[ActorKey], code: str, now: datetime) -> bool:
    """Check the conditions that never depend on the resource's content."""
    if node.never:
        return False
    if node.actor_keys is not None and node.actor_keys.isdisjoint(keys):
        return False
    actions = node.actions
    if actions is not None and code not in actions:
        # Any permitted action implies reading; denying reading denies every action.
        if node.permit:
            if code != ACTION_ACCESS:
                return False
        elif ACTION_ACCESS not in actions:
            return False
    if node.period is not None:
        start, end = node.period
        if (start is not None and not reached(now, start)) or (
            end is not None and not not_passed(now, end)
        ):
            return False
    return node.classes is None or probe.rtype in node.classes


def _content(node: Node, probe: Probe) -> bool | None:
    """Check the conditions on labels, codes and instance; None when unknown."""
    unknown = False
    if node.labels is not None:
        if probe.labels is None:
            unknown = True
        elif node.labels.isdisjoint(probe.labels):
            return False
    if node.codes is not None or node.data is not None:
        if probe.resource is None:
            return None
        if node.codes is not None and node.codes.isdisjoint(_resource_codes(probe.resource)):
            return False
        if node.data is not None and probe.instance not in node.data:
            return False
    return None if unknown else True


def _exact(
    node: Node, probe: Probe, keys: frozenset[ActorKey], code: str, now: datetime
) -> Node | None:
    """Return the deciding (most specific) provision, or None if none applies."""
    if not _fixed(node, probe, keys, code, now) or not _content(node, probe):
        return None
    found: Node | None = None
    for child in node.children:
        hit = _exact(child, probe, keys, code, now)
        if hit is None:
            continue
        if not hit.permit:
            return hit  # among sibling exceptions a deny wins
        if found is None:
            found = hit
    return found or node


# Outcomes of the three-valued evaluation: P permit, DA deny naming the actor, DG other deny,
# N no provision decides.
Possible = dict[str, Node | None]


def _own(node: Node) -> str:
    if node.permit:
        return "P"
    return "DA" if node.names_actor else "DG"


def _three(
    node: Node, probe: Probe, keys: frozenset[ActorKey], code: str, now: datetime
) -> Possible:
    """Return every outcome the provision tree may produce, with a provision for each."""
    if not _fixed(node, probe, keys, code, now):
        return {"N": None}
    applies = _content(node, probe)
    if applies is False:
        return {"N": None}
    result: Possible = {}
    children = [_three(child, probe, keys, code, now) for child in node.children]
    for outcome in children:
        for kind in ("DA", "DG"):
            if kind in outcome:
                result.setdefault(kind, outcome[kind])
    if all("P" in o or "N" in o for o in children):
        for outcome in children:
            if "P" in outcome:
                result.setdefault("P", outcome["P"])
                break
        if all("N" in o for o in children):
            result.setdefault(_own(node), node)
    if applies is None:
        result.setdefault("N", None)
    return result


Hit = tuple[str, CompiledConsent | None, Node | None]


def _combine_exact(
    consents: tuple[CompiledConsent, ...],
    probe: Probe,
    keys: frozenset[ActorKey],
    code: str,
    now: datetime,
) -> Hit:
    permit: Hit | None = None
    generic: Hit | None = None
    for cc in consents:
        if cc.root is None:
            continue
        node = _exact(cc.root, probe, keys, code, now)
        if node is None:
            continue
        if node.permit:
            if permit is None:
                permit = ("P", cc, node)
        elif node.names_actor:
            # A deny that names the actor is the family's "not them", whatever other
            # Consents say; other denies are exceptions inside their own Consent only.
            return ("D", cc, node)
        elif generic is None:
            generic = ("D", cc, node)
    return permit or generic or ("N", None, None)


def _combine_three(
    consents: tuple[CompiledConsent, ...],
    probe: Probe,
    *,
    keys: frozenset[ActorKey],
    code: str,
    now: datetime,
    mode: Mode,
) -> Hit:
    outcomes = [
        (cc, _three(cc.root, probe, keys, code, now)) for cc in consents if cc.root is not None
    ]
    may_permit = [(cc, o) for cc, o in outcomes if "P" in o]
    surely_named_deny = [(cc, o) for cc, o in outcomes if set(o) == {"DA"}]
    maybe_named_deny = [(cc, o) for cc, o in outcomes if "DA" in o]
    if mode is Mode.POSSIBLE:
        if may_permit and not surely_named_deny:
            cc, o = may_permit[0]
            return ("P", cc, o["P"])
        if all("N" in o for _, o in outcomes):
            return ("N", None, None)
    else:
        sure = [(cc, o) for cc, o in may_permit if set(o) == {"P"}]
        if sure and not maybe_named_deny:
            cc, o = sure[0]
            return ("P", cc, o["P"])
        if all(set(o) == {"N"} for _, o in outcomes):
            return ("N", None, None)
    for cc, o in outcomes:
        for kind in ("DA", "DG"):
            if kind in o:
                return ("D", cc, o[kind])
    return ("D", None, None)


def evaluate(
    consents: tuple[CompiledConsent, ...],
    probe: Probe,
    *,
    keys: frozenset[ActorKey],
    action: Action,
    now: datetime,
    mode: Mode,
) -> Hit:
    """Decide one action over a set of Consents: P, D (explicit deny) or N (none applies)."""
    denied: Hit | None = None
    for code in CODES[action]:
        if mode is Mode.EXACT:
            hit = _combine_exact(consents, probe, keys, code, now)
        else:
            hit = _combine_three(consents, probe, keys=keys, code=code, now=now, mode=mode)
        if hit[0] == "P":
            return hit
        if hit[0] == "D" and denied is None:
            denied = hit
    return denied or ("N", None, None)


def grant(
    ctx: LogContext, keys: frozenset[ActorKey], probe: Probe, action: Action, mode: Mode
) -> Outcome:
    """Decide for a professional or system by the valid Consents, with the derived rules."""
    kind, cc, node = evaluate(ctx.valid, probe, keys=keys, action=action, now=ctx.now, mode=mode)
    if kind == "P":
        return Outcome(True, Basis.CONSENT, cc, node)
    if kind == "D":
        return Outcome(False, Basis.DENIED_BY_PROVISION, cc, node)
    rtype = probe.rtype
    if rtype in IDENTITY_TYPES and action is not Action.DELETE:
        found = _identity(
            ctx, keys, action, Mode.CERTAIN if mode is Mode.CERTAIN else Mode.POSSIBLE
        )
        if found is not None:
            return found
    elif rtype == "Consent" and action is Action.READ:
        named = _named(ctx, keys, probe, mode)
        if named is not None:
            return named
    elif rtype == "Provenance":
        follows = _provenance(ctx, keys, probe, action, mode)
        if follows is not None:
            return follows
    return Outcome(False, Basis.DEFAULT_DENY)


def _identity(
    ctx: LogContext, keys: frozenset[ActorKey], action: Action, mode: Mode
) -> Outcome | None:
    """Whose log it is (Patient, RelatedPerson) goes with any right in the log (§13)."""
    cache_key = ("identity", keys, action, mode)
    if cache_key in ctx.memo:
        cached: Outcome | None = ctx.memo[cache_key]
        return cached
    found: Outcome | None = None
    for rtype in LOG_CONTENT_TYPES:
        probe = Probe(rtype, None, None, None)
        kind, cc, node = evaluate(
            ctx.valid, probe, keys=keys, action=action, now=ctx.now, mode=mode
        )
        if kind == "P":
            found = Outcome(True, Basis.CONSENT, cc, node, via=f"identity:{rtype}")
            break
    ctx.memo[cache_key] = found
    return found


def _named(ctx: LogContext, keys: frozenset[ActorKey], probe: Probe, mode: Mode) -> Outcome | None:
    """An organisation or practitioner reads a Consent that names them, whatever its status."""
    if mode is Mode.CERTAIN:
        return None
    if probe.resource is None:
        for state in ctx.states:
            if actor_named(keys, state.compiled):
                return Outcome(True, Basis.NAMED_IN_CONSENT, state.compiled)
        return None
    cc = ctx.compiled_by_id(text(probe.resource.get("id")))
    if cc is None or (cc.resource is not probe.resource and cc.resource != probe.resource):
        cc = compile_consent(probe.resource)
    return Outcome(True, Basis.NAMED_IN_CONSENT, cc) if actor_named(keys, cc) else None


def _provenance(
    ctx: LogContext, keys: frozenset[ActorKey], probe: Probe, action: Action, mode: Mode
) -> Outcome | None:
    """A Provenance goes with its targets: the action must be permitted on every target."""
    if mode is Mode.CERTAIN:
        return None
    if probe.resource is None:
        for rtype in sorted(_PROVENANCE_TARGETS):
            found = grant(ctx, keys, Probe(rtype, probe.labels, None, None), action, mode)
            if found.permitted:
                return Outcome(True, Basis.CONSENT, found.consent, found.node, via="provenance")
        return None
    targets = [literal(t) for t in items(probe.resource.get("target"))]
    if not targets or any(t is None or t[0] not in _PROVENANCE_TARGETS for t in targets):
        return None
    first: Outcome | None = None
    for target in targets:
        assert target is not None
        # The target's content is unknown here: require a right that holds whatever it
        # contains, with the Provenance's own labels (the service copies them from the target).
        found = grant(ctx, keys, Probe(target[0], probe.labels, None, None), action, Mode.CERTAIN)
        if not found.permitted:
            return None
        first = first or found
    assert first is not None
    return Outcome(True, Basis.CONSENT, first.consent, first.node, via="provenance")
