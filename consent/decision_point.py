"""The consent decision point: the family's Consents and municipal policy in, a Decision out.

This is the Policy Decision Point of the stafettlogg (in the manner of HAPI FHIR's
``IConsentService`` and Medplum's access module): pure functions without I/O, framework,
database or clock. The enforcement side loads the child's Patient, RelatedPersons and
Consents into a `ChildLog`, resolves the caller into an `Actor`, passes `now`, and calls
`decide` for every read, search hit and write, `check_consent_write` for every Consent
written, and `readable_types` to push a filter into SQL. Every decision says which rule,
Consent and provision decided, so it can be audited and shown to a DPO.

FHIR R4 Consent: https://hl7.org/fhir/R4/consent.html (provisions:
https://hl7.org/fhir/R4/consent-definitions.html#Consent.provision). The rules, and every
choice where the brief was silent, are in consent/README.md; in short:

1. Default deny (IHE PCF "implicit: deny all"): outside the family nobody reads or writes
   anything in the log without a valid Consent that permits it.
2. A Consent counts when it is `active`, for this child, scope `patient-privacy`, its
   `provision.period` covers `now` (no period: no expiry), and a performer can consent
   (a guardian with parental responsibility, or the youth at the domain's consent age when
   signing; with `guardians_required="all"` every guardian with joint responsibility).
3. Professionals and systems are matched by Organization (id or ENH org.nr), Practitioner
   (id, HPR or fødselsnummer) or PractitionerRole; `class`, `securityLabel`, `code` and
   `data` narrow a provision; nested provisions are exceptions and the most specific one
   decides, a deny winning among siblings; a deny that names the actor beats permits of
   other Consents. READ needs any covering permit, WRITE one with action `collect` or
   `correct` (or no action), DELIVER one with `collect` (or no action).
4. The family: guardians read all but what is labelled hidden-from-guardians; the youth
   reads everything from `youth_read_age`; both write Consents (guardians, and the youth at
   consent age). A DPO reads Consents and AuditEvents only and never writes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from consent._internal.consents import CompiledConsent, compile_consent
from consent._internal.context import Guardian, LogContext, log_context, signatures
from consent._internal.evaluate import (
    Mode,
    Outcome,
    Probe,
    actor_keys,
    evaluate,
    grant,
    probe_for,
)
from consent._internal.fhir import literal, security_labels, text
from consent.constants import (
    LOG_CONTENT_TYPES,
    LOG_RESOURCE_TYPES,
    RECTIFICATION_CODE,
    TASK_TYPE,
)
from consent.errors import InvalidRequest
from consent.model import (
    AccessRequest,
    Action,
    Actor,
    ActorKind,
    Basis,
    ChildLog,
    ConsentPolicy,
    Decision,
    TypeAccess,
    ValidConsent,
)

__all__ = [
    "check_consent_write",
    "consent_status",
    "decide",
    "readable_types",
    "valid_consents",
]

_VERB = {
    Action.READ: "read",
    Action.WRITE: "write",
    Action.DELIVER: "deliver",
    Action.DELETE: "delete",
}
# Where each log type names its child (the Patient compartment parameter Stafett stores by).
_PATIENT_ELEMENT = {
    "RelatedPerson": "patient",
    "CarePlan": "subject",
    "CareTeam": "subject",
    "Goal": "subject",
    "Task": "for",
    "Communication": "subject",
    "Consent": "patient",
}
_ENDED = frozenset({"inactive", "rejected", "entered-in-error"})


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}."


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidRequest("now must be a timezone-aware datetime (Europe/Oslo)")


def _belongs(resource: Mapping[str, Any], rtype: str, patient_id: str) -> bool:
    """Return False when the resource names another child; a missing link is tolerated."""
    if rtype == "Patient":
        rid = text(resource.get("id"))
        return rid is None or rid == patient_id
    element = _PATIENT_ELEMENT.get(rtype)
    link = resource.get(element) if element is not None else None
    if link is None:
        return True
    if type(link) is dict and link.get("reference") == f"Patient/{patient_id}":
        return True  # the usual relative reference, without parsing
    return literal(link) == ("Patient", patient_id)


class _Words:
    """Builds Decisions with the policy revision and decision id filled in."""

    __slots__ = ("decision_id", "revision")

    def __init__(self, policy: ConsentPolicy, decision_id: str) -> None:
        self.revision = policy.revision
        self.decision_id = decision_id

    def __call__(
        self,
        permitted: bool,
        basis: Basis,
        reason: str,
        consent: CompiledConsent | None = None,
        provision: str | None = None,
    ) -> Decision:
        return Decision(
            permitted=permitted,
            basis=basis,
            reason=reason,
            decision_id=self.decision_id,
            consent_id=consent.consent_id if consent is not None else None,
            provision=provision,
            policy_revision=self.revision,
        )


def _until(cc: CompiledConsent) -> str:
    end = cc.period_text[1]
    return f"valid until {end}" if end else "no expiry"


def _word_outcome(
    out: Outcome,
    *,
    ctx: LogContext,
    keys: frozenset[tuple[str, str]],
    probe: Probe,
    action: Action,
    words: _Words,
    type_level: bool,
) -> Decision:
    verb = _VERB[action]
    what = probe.rtype if not type_level else f"{probe.rtype} resources"
    cc, node = out.consent, out.node
    path = node.path if node is not None else None
    if out.permitted:
        assert cc is not None
        later = " Decide again for each resource." if type_level else ""
        if out.basis is Basis.NAMED_IN_CONSENT:
            return words(
                True,
                Basis.NAMED_IN_CONSENT,
                f"The caller is named in {cc.reference}, so it may read that Consent.{later}",
                cc,
            )
        if out.via.startswith("identity:"):
            reason = (
                f"{cc.reference} lets the caller {verb} {out.via.split(':', 1)[1]} in this log "
                f"({path}, {_until(cc)}), which includes whose log it is ({probe.rtype})."
            )
        elif out.via == "provenance":
            reason = (
                f"The caller may {verb} the target of this Provenance by {cc.reference} "
                f"({path}, {_until(cc)})."
            )
        else:
            reason = f"{cc.reference} permits the caller to {verb} {what} ({path}, {_until(cc)})."
        return words(True, Basis.CONSENT, reason + later, cc, path)
    if out.basis is Basis.DENIED_BY_PROVISION and cc is not None:
        return words(
            False,
            Basis.DENIED_BY_PROVISION,
            f"{cc.reference} denies the caller to {verb} {what} ({path}).",
            cc,
            path,
        )
    # Nothing permitted it: say which Consent would have, had it been valid.
    mode = Mode.POSSIBLE if type_level else Mode.EXACT
    for state in ctx.states:
        inv = state.compiled
        if state.valid or inv.root is None or inv.patient != ("Patient", ctx.patient_id):
            continue
        kind, _, hit = evaluate((inv,), probe, keys=keys, action=action, now=ctx.now, mode=mode)
        if kind == "P":
            return words(
                False,
                Basis.CONSENT_INVALID,
                f"No valid consent lets the caller {verb} {what}; {inv.reference} would, "
                f"but {state.reason}.",
                inv,
                hit.path if hit is not None else None,
            )
    return words(
        False,
        Basis.DEFAULT_DENY,
        f"No valid consent lets the caller {verb} {what} in this log (default deny).",
    )


def _family_role(ctx: LogContext, actor: Actor) -> tuple[str, Guardian | None, str]:
    """Return ("youth" | "guardian" | "", the guardian, why not family)."""
    pid = actor.pid.strip() if actor.pid else None
    if pid is None:
        return "", None, "The citizen's token carries no fødselsnummer or D-nummer."
    if pid in ctx.patient_pids:
        return "youth", None, ""
    guardian = ctx.guardian_by_pid.get(pid)
    if guardian is not None:
        return "guardian", guardian, ""
    why = ctx.not_guardian_by_pid.get(pid)
    if why is not None:
        return "", None, f"The citizen is not a guardian with parental responsibility: {why}."
    return "", None, "The citizen is neither the child nor a guardian of the child."


def _youth_reads(ctx: LogContext) -> str | None:
    """Return why the youth may not read their own log, or None if they may."""
    if ctx.age is None:
        return "The child's age is unknown (no birthDate or readable fødselsnummer)."
    if ctx.age < ctx.policy.youth_read_age:
        return (
            f"The child reads their own log from age {ctx.policy.youth_read_age} and is {ctx.age}."
        )
    return None


def _family(
    *,
    ctx: LogContext,
    actor: Actor,
    log: ChildLog,
    request: AccessRequest,
    labels: frozenset[tuple[str, str]] | None,
    words: _Words,
) -> Decision:
    role, guardian, why_not = _family_role(ctx, actor)
    if not role:
        return words(False, Basis.NOT_FAMILY, why_not)
    basis = Basis.FAMILY_YOUTH if role == "youth" else Basis.FAMILY_GUARDIAN
    if role == "youth":
        refusal = _youth_reads(ctx)
        if refusal is not None:
            return words(False, basis, refusal)
    policy, rtype, action = ctx.policy, request.resource_type, request.action
    who = "The youth" if guardian is None else f"Guardian {guardian.reference}"
    hidden = (
        guardian is not None and labels is not None and not labels.isdisjoint(policy.hidden_labels)
    )
    if hidden:
        return words(
            False,
            Basis.HIDDEN_FROM_GUARDIANS,
            f"The {rtype} is labelled hidden from guardians (meta.security).",
        )
    if action is Action.READ:
        extra = ", including entries hidden from guardians" if guardian is None else ""
        return words(True, basis, f"{who} reads the child's log{extra}.")
    if action is Action.DELIVER:
        return words(False, basis, "Delivery to vendor systems is for services, not the family.")
    if rtype == "Consent":
        if action is Action.DELETE:
            return words(
                False,
                Basis.CONSENT_WRITE_REFUSED,
                "Consents are never deleted; withdraw one by setting its status to inactive.",
            )
        if request.resource is None:
            return words(True, basis, f"{who} may write Consents; decided per Consent.")
        return check_consent_write(
            actor=actor,
            log=log,
            consent=request.resource,
            policy=policy,
            now=ctx.now,
            decision_id=words.decision_id,
        )
    if rtype in policy.family_write_types:
        return words(True, basis, f"The consent policy lets the family {_VERB[action]} {rtype}.")
    if rtype == "Task" and action is Action.WRITE:
        own = guardian.reference if guardian is not None else f"Patient/{log.patient_id}"
        refusal = _rectification_refusal(request.resource, own)
        if refusal is None:
            return words(True, basis, f"{who} may ask for a correction (rectification request).")
        if request.resource is not None and _task_code(request.resource) == RECTIFICATION_CODE:
            return words(False, basis, refusal)
    return words(
        False,
        basis,
        f"The family writes Consents only; {rtype} entries are written by the services.",
    )


def _task_code(task: Mapping[str, Any]) -> str | None:
    code = task.get("code")
    for coding in code.get("coding") or () if isinstance(code, Mapping) else ():
        if isinstance(coding, Mapping) and coding.get("system") == TASK_TYPE:
            return str(coding.get("code"))
    return None


def _rectification_refusal(task: Mapping[str, Any] | None, own: str) -> str | None:
    """Return why the family may not write this Task as a rectification request, or None.

    GDPR art. 16: the family asks for a correction; the services decide and correct. The
    family writes only its own open requests (`requested`) or withdraws them (`cancelled`).
    """
    if task is None:
        return None  # type-level: decided per Task
    if _task_code(task) != RECTIFICATION_CODE:
        return "Only rectification requests are written by the family."
    if task.get("status") not in ("requested", "cancelled"):
        return (
            "A rectification request from the family is requested or cancelled; "
            "the services answer it."
        )
    requester = task.get("requester")
    reference = requester.get("reference") if isinstance(requester, Mapping) else None
    if not isinstance(reference, str) or not (reference == own or reference.endswith("/" + own)):
        return f"A rectification request must name the writer ({own}) as requester."
    return None


def decide(
    *,
    actor: Actor,
    log: ChildLog,
    request: AccessRequest,
    policy: ConsentPolicy,
    now: datetime,
    decision_id: str,
) -> Decision:
    """Decide whether the actor may do the request's action on a resource of this log.

    Call it for every read, every search hit (with the resource) and every write; with
    `request.resource` None it answers a type-level question and over-approximates. A write
    of a Consent is decided by `check_consent_write`. For an update, decide the stored and
    the new version. Keep one `now` and one `ChildLog` per request: the parsed Consents and
    their validity are memoised on the log. Provision semantics follow
    https://hl7.org/fhir/R4/consent-definitions.html#Consent.provision (nested provisions are
    exceptions); the choices R4 leaves open are in consent/README.md.
    """
    _require_aware(now)
    words = _Words(policy, decision_id)
    rtype, resource, action = request.resource_type, request.resource, request.action
    if resource is not None and resource.get("resourceType", rtype) != rtype:
        raise InvalidRequest(
            f"request type {rtype} does not match resource type {resource.get('resourceType')}"
        )
    if actor.kind is ActorKind.DPO:
        if action is not Action.READ:
            return words(
                False, Basis.DPO, f"A data protection officer may not {_VERB[action]} anything."
            )
        if rtype in ("Consent", "AuditEvent"):
            if resource is not None and not _belongs(resource, rtype, log.patient_id):
                return words(False, Basis.NOT_IN_LOG, "The Consent is for another child.")
            return words(True, Basis.DPO, f"A data protection officer reads {rtype} resources.")
        return words(
            False,
            Basis.DPO,
            "A data protection officer reads Consents and audit records, never the log's content.",
        )
    if rtype not in LOG_RESOURCE_TYPES:
        return words(
            False,
            Basis.NOT_IN_LOG,
            f"{rtype} is not part of a child's log; the consent decision point does not govern it.",
        )
    if resource is not None and not _belongs(resource, rtype, log.patient_id):
        return words(False, Basis.NOT_IN_LOG, f"The {rtype} belongs to another child's log.")
    ctx = log_context(log, policy, now)
    labels = request.security_labels
    if labels is None and resource is not None:
        labels = security_labels(resource)
    if actor.kind is ActorKind.CITIZEN:
        return _family(ctx=ctx, actor=actor, log=log, request=request, labels=labels, words=words)

    if rtype == "Consent" and action is not Action.READ:
        if action is Action.DELETE:
            return words(
                False,
                Basis.CONSENT_WRITE_REFUSED,
                "Consents are never deleted; withdraw one by setting its status to inactive.",
            )
        if action is Action.WRITE:
            if resource is None:
                return words(
                    True,
                    Basis.RECORDED_WITH_SIGNED_FORM,
                    "A service may record a Consent with the signed form; decided per Consent.",
                )
            return check_consent_write(
                actor=actor,
                log=log,
                consent=resource,
                policy=policy,
                now=now,
                decision_id=decision_id,
            )
    keys = actor_keys(actor)
    probe = probe_for(rtype, resource, labels)
    mode = Mode.EXACT if resource is not None else Mode.POSSIBLE
    out = grant(ctx, keys, probe, action, mode)
    return _word_outcome(
        out,
        ctx=ctx,
        keys=keys,
        probe=probe,
        action=action,
        words=words,
        type_level=resource is None,
    )


def check_consent_write(
    *,
    actor: Actor,
    log: ChildLog,
    consent: Mapping[str, Any],
    policy: ConsentPolicy,
    now: datetime,
    decision_id: str,
) -> Decision:
    """Decide whether the actor may create or update this Consent of the child.

    The family (a guardian, or the youth at the Consent's consent age) creates, narrows and
    withdraws; an active Consent they write must name the writer as performer (the login is
    the signature). A practitioner or system records on the family's behalf only with the
    signed form (`sourceAttachment`) and a performer who can consent. A DPO never writes.
    A withdrawn, rejected or entered-in-error Consent is never reactivated.
    See https://hl7.org/fhir/R4/consent.html.
    """
    _require_aware(now)
    words = _Words(policy, decision_id)
    if actor.kind is ActorKind.DPO:
        return words(False, Basis.DPO, "A data protection officer never writes.")
    if consent.get("resourceType", "Consent") != "Consent":
        raise InvalidRequest("check_consent_write takes a Consent resource")
    cc = compile_consent(consent)
    if cc.patient != ("Patient", log.patient_id):
        return words(
            False,
            Basis.NOT_IN_LOG,
            f"The Consent names {cc.patient_text} as patient, not this child "
            f"(Patient/{log.patient_id}).",
        )
    ctx = log_context(log, policy, now)
    stored = ctx.compiled_by_id(cc.consent_id)
    if (
        stored is not None
        and stored.status in _ENDED
        and cc.status
        not in (
            stored.status,
            "entered-in-error",
        )
    ):
        return words(
            False,
            Basis.CONSENT_WRITE_REFUSED,
            f"{stored.reference} has ended (status {stored.status}) and is not reactivated; "
            "record a new Consent.",
            stored,
        )
    verdict = signatures(cc, ctx)
    withdrawal = stored is not None and cc.status in _ENDED
    if actor.kind is ActorKind.CITIZEN:
        return _family_consent_write(
            ctx,
            actor,
            cc,
            stored,
            verdict_ok=verdict.complete,
            verdict_problem=verdict.problem,
            words=words,
        )
    if not cc.has_signed_form:
        return words(
            False,
            Basis.CONSENT_WRITE_REFUSED,
            "A Consent recorded by a service must carry the signed form in sourceAttachment "
            "(data or url).",
            cc,
        )
    if not verdict.capable and not withdrawal:
        return words(
            False,
            Basis.CONSENT_WRITE_REFUSED,
            "A Consent recorded by a service must have a guardian with parental responsibility "
            f"or the youth at consent age as performer; {verdict.problem}.",
            cc,
        )
    if cc.status == "active" and not verdict.complete:
        return words(False, Basis.CONSENT_WRITE_REFUSED, _sentence(verdict.problem), cc)
    if stored is not None and cc.status == "active" and _changed_without_new_form(stored, cc):
        return words(
            False,
            Basis.CONSENT_WRITE_REFUSED,
            f"Changing what {stored.reference} permits or who signed it needs a newly signed "
            "form in sourceAttachment.",
            stored,
        )
    if withdrawal and stored is not None and stored.status not in _ENDED:
        reason = (
            f"{stored.reference} set to {cc.status} on the family's behalf, with effect from now."
        )
    else:
        signer = verdict.signers or "the existing performers"
        reason = f"Recorded on the family's behalf with the signed form; signed by {signer}."
    return words(True, Basis.RECORDED_WITH_SIGNED_FORM, reason, cc)


def _changed_without_new_form(stored: CompiledConsent, new: CompiledConsent) -> bool:
    old, cur = stored.resource, new.resource
    changed = any(old.get(k) != cur.get(k) for k in ("provision", "performer", "category"))
    return changed and old.get("sourceAttachment") == cur.get("sourceAttachment")


def _family_consent_write(
    ctx: LogContext,
    actor: Actor,
    cc: CompiledConsent,
    stored: CompiledConsent | None,
    *,
    verdict_ok: bool,
    verdict_problem: str,
    words: _Words,
) -> Decision:
    role, guardian, why_not = _family_role(ctx, actor)
    if not role:
        return words(False, Basis.NOT_FAMILY, why_not, cc)
    policy = ctx.policy
    basis = Basis.FAMILY_YOUTH if role == "youth" else Basis.FAMILY_GUARDIAN
    pid = (actor.pid or "").strip()
    if role == "youth":
        domains = set(cc.domains) | set(stored.domains if stored is not None else ())
        limit = max(policy.consent_age_for(d) for d in domains)
        if ctx.age is None or ctx.age < limit:
            age = "unknown" if ctx.age is None else str(ctx.age)
            return words(
                False,
                basis,
                f"The youth consents alone from age {limit} ({', '.join(sorted(domains))}) "
                f"and is {age}.",
                cc,
            )
        self_keys = {("Patient", ctx.patient_id), ("pid", pid)}
        who = "The youth"
    else:
        assert guardian is not None
        if not security_labels(cc.resource).isdisjoint(policy.hidden_labels) or (
            stored is not None
            and not security_labels(stored.resource).isdisjoint(policy.hidden_labels)
        ):
            return words(
                False, Basis.HIDDEN_FROM_GUARDIANS, "The Consent is hidden from guardians.", cc
            )
        if stored is not None and _youth_signed_alone(ctx, stored):
            # The youth's own consent, given at consent age, is theirs to change.
            return words(
                False,
                Basis.CONSENT_WRITE_REFUSED,
                f"{stored.reference} was given by the youth at consent age; only the youth "
                "changes or withdraws it.",
                stored,
            )
        self_keys = {("RelatedPerson", guardian.rp_id), ("pid", pid)}
        who = f"Guardian {guardian.reference}"
    if cc.status == "active":
        if self_keys.isdisjoint(cc.performers):
            return words(
                False,
                Basis.CONSENT_WRITE_REFUSED,
                "An active Consent written by the family must name the writer as performer "
                "(the login is the signature).",
                cc,
            )
        if not verdict_ok:
            return words(False, Basis.CONSENT_WRITE_REFUSED, _sentence(verdict_problem), cc)
    if stored is not None and cc.status == "inactive" and stored.status != "inactive":
        action = f"withdraws {stored.reference}, with effect from now"
    elif stored is not None:
        action = f"updates {stored.reference}"
    else:
        action = f"records a new Consent (status {cc.status})"
    return words(True, basis, f"{who} {action}.", cc)


def _youth_signed_alone(ctx: LogContext, cc: CompiledConsent) -> bool:
    """Return whether the youth signed this Consent and is at its consent age now."""
    youth = {("Patient", ctx.patient_id)} | {("pid", p) for p in ctx.patient_pids}
    if youth.isdisjoint(cc.performers) or ctx.age is None:
        return False
    return ctx.age >= max(ctx.policy.consent_age_for(d) for d in cc.domains)


def valid_consents(log: ChildLog, policy: ConsentPolicy, now: datetime) -> list[ValidConsent]:
    """List every Consent of the log with whether it counts now and why (not)."""
    _require_aware(now)
    ctx = log_context(log, policy, now)
    return [
        ValidConsent(
            consent_id=s.compiled.consent_id,
            valid=s.valid,
            reason=s.reason,
            status=s.compiled.status,
            domains=s.compiled.domains,
            performers=s.compiled.performer_texts,
            period_start=s.compiled.period_text[0],
            period_end=s.compiled.period_text[1],
        )
        for s in ctx.states
    ]


def readable_types(
    *,
    actor: Actor,
    log: ChildLog,
    policy: ConsentPolicy,
    now: datetime,
    among: Collection[str] | None = None,
) -> TypeAccess:
    """Summarise which types of this log the actor might read, for a filter in SQL.

    Never under-approximates `decide`: a type left out is never readable, and neither is a
    resource carrying an excluded label. Push `types` and `excluded_labels` into the search
    query (as Oso's `authorized_query` does), then `decide` per hit when
    `needs_resource_check` is true. Consent classes: https://hl7.org/fhir/R4/consent.html.
    With `among`, only those types need be judged: other types may then be missing from
    `types`, and `needs_resource_check` speaks of those judged. A search of one type over
    hundreds of logs need not judge all the others.
    """
    _require_aware(now)
    if actor.kind is ActorKind.DPO:
        return TypeAccess(types=frozenset({"Consent"}), needs_resource_check=False)
    ctx = log_context(log, policy, now)
    if actor.kind is ActorKind.CITIZEN:
        role, _, _ = _family_role(ctx, actor)
        if role == "youth" and _youth_reads(ctx) is None:
            return TypeAccess(types=LOG_RESOURCE_TYPES, needs_resource_check=False)
        if role == "guardian":
            return TypeAccess(
                types=LOG_RESOURCE_TYPES,
                excluded_labels=policy.hidden_labels,
                needs_resource_check=False,
            )
        return TypeAccess(types=frozenset(), needs_resource_check=False)
    keys = actor_keys(actor)
    types: set[str] = set()
    check = False
    judged = LOG_RESOURCE_TYPES if among is None else LOG_RESOURCE_TYPES & frozenset(among)
    for rtype in sorted(judged):
        probe = Probe(rtype, None, None, None)
        if grant(ctx, keys, probe, Action.READ, Mode.POSSIBLE).permitted:
            types.add(rtype)
            if not grant(ctx, keys, probe, Action.READ, Mode.CERTAIN).permitted:
                check = True
    return TypeAccess(types=frozenset(types), needs_resource_check=check)


def consent_status(
    *, actor: Actor, log: ChildLog, policy: ConsentPolicy, now: datetime, decision_id: str
) -> Decision:
    """Answer whether the actor may see this log at all, and by which Consent."""
    _require_aware(now)
    words = _Words(policy, decision_id)
    if actor.kind is ActorKind.DPO:
        return words(
            True, Basis.DPO, "A data protection officer sees the log's Consents, not its content."
        )
    ctx = log_context(log, policy, now)
    if actor.kind is ActorKind.CITIZEN:
        role, guardian, why_not = _family_role(ctx, actor)
        if role == "youth":
            refusal = _youth_reads(ctx)
            if refusal is not None:
                return words(False, Basis.FAMILY_YOUTH, refusal)
            return words(True, Basis.FAMILY_YOUTH, "The youth reads their own log.")
        if guardian is not None:
            return words(
                True,
                Basis.FAMILY_GUARDIAN,
                f"Guardian {guardian.reference} reads the log, except entries hidden from "
                "guardians.",
            )
        return words(False, Basis.NOT_FAMILY, why_not)
    keys = actor_keys(actor)
    first: Outcome | None = None
    readable: list[str] = []
    for rtype in LOG_CONTENT_TYPES:
        out = grant(ctx, keys, Probe(rtype, None, None, None), Action.READ, Mode.POSSIBLE)
        if out.permitted:
            readable.append(rtype)
            first = first or out
    if first is not None and first.consent is not None:
        cc = first.consent
        node_path = first.node.path if first.node is not None else None
        return words(
            True,
            Basis.CONSENT,
            f"{cc.reference} lets the caller read {', '.join(readable)} ({_until(cc)}); "
            "each resource is still decided on its own.",
            cc,
            node_path,
        )
    probe = Probe("CarePlan", None, None, None)
    out = grant(ctx, keys, probe, Action.READ, Mode.POSSIBLE)
    return _word_outcome(
        out, ctx=ctx, keys=keys, probe=probe, action=Action.READ, words=words, type_level=True
    )
