"""Everything about one log that depends only on the policy and `now`, computed once.

Guardians, the child's age and each Consent's validity are the same for every decision of a
request, so they are memoised on the ChildLog (keyed by the policy object and `now`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from consent._internal.consents import ActorKey, CompiledConsent, compile_consent
from consent._internal.fhir import (
    Bound,
    age_on,
    birth_date_from_pid,
    codes_in,
    literal,
    mapping,
    not_passed,
    parse_bound,
    person_ids,
    reached,
    text,
)
from consent.constants import JOINT_RESPONSIBILITY, PARENTAL_RESPONSIBILITY
from consent.model import ChildLog, ConsentPolicy

_STATUS_REASONS = {
    "draft": "it is a draft (not signed), which grants nothing",
    "proposed": "it is only proposed (not signed), which grants nothing",
    "inactive": "it was withdrawn (status inactive)",
    "rejected": "the family said no (status rejected)",
    "entered-in-error": "it was entered in error",
}


@dataclass(frozen=True, slots=True)
class Guardian:
    """A RelatedPerson who has parental responsibility for the child now."""

    rp_id: str
    reference: str
    pids: frozenset[str]
    codes: frozenset[str]

    @property
    def joint(self) -> bool:
        """Return whether the responsibility is joint (`felles`)."""
        return JOINT_RESPONSIBILITY in self.codes


@dataclass(frozen=True, slots=True)
class Signatures:
    """Who among a Consent's performers can consent, and what is missing."""

    capable: bool
    complete: bool
    signers: str
    problem: str


@dataclass(frozen=True, slots=True)
class ConsentState:
    """One compiled Consent with its validity at `now`."""

    compiled: CompiledConsent
    valid: bool
    reason: str


@dataclass(slots=True)
class LogContext:
    """The policy- and time-dependent facts of one log."""

    policy: ConsentPolicy
    now: datetime
    patient_id: str
    patient_pids: frozenset[str]
    birth: date | None
    age: int | None
    guardians: dict[str, Guardian]
    guardian_by_pid: dict[str, Guardian]
    not_guardian: dict[str, str]
    not_guardian_by_pid: dict[str, str]
    states: tuple[ConsentState, ...] = ()
    valid: tuple[CompiledConsent, ...] = ()
    memo: dict[Any, Any] = field(default_factory=dict)

    def compiled_by_id(self, consent_id: str | None) -> CompiledConsent | None:
        """Return the stored Consent with this id."""
        if consent_id is None:
            return None
        for state in self.states:
            if state.compiled.consent_id == consent_id:
                return state.compiled
        return None


def _birth(patient: Mapping[str, Any], pids: frozenset[str]) -> date | None:
    raw = patient.get("birthDate")
    if raw is not None:
        try:
            # A partial birthDate ("2011") counts from its last possible day, so no age-based
            # right starts before it certainly applies.
            bound = parse_bound(raw, end=True)
            return bound.date() if isinstance(bound, datetime) else bound
        except ValueError:
            pass
    for pid in sorted(pids):
        born = birth_date_from_pid(pid)
        if born is not None:
            return born
    return None


def _covers(period: Any, now: datetime) -> bool | None:
    """Return whether a Period covers now; None if it cannot be read."""
    elt = mapping(period)
    if elt is None:
        return None
    try:
        start: Bound | None = parse_bound(elt["start"], end=False) if "start" in elt else None
        end: Bound | None = parse_bound(elt["end"], end=True) if "end" in elt else None
    except (ValueError, TypeError):
        return None
    return (start is None or reached(now, start)) and (end is None or not_passed(now, end))


def _guardians(log: ChildLog, ctx: LogContext) -> None:
    policy = ctx.policy
    ended = (
        policy.guardian_until_age is not None
        and ctx.age is not None
        and ctx.age >= policy.guardian_until_age
    )
    for index, rp in enumerate(log.related_persons):
        rp_id = text(rp.get("id")) or f"#pending-{index}"
        pids = person_ids(rp)
        reason: str | None = None
        codes = codes_in(rp.get("relationship"), PARENTAL_RESPONSIBILITY)
        if rp.get("resourceType", "RelatedPerson") != "RelatedPerson":
            reason = "is not a RelatedPerson"
        elif literal(rp.get("patient")) != ("Patient", ctx.patient_id):
            reason = "is not a related person of this child"
        elif rp.get("active") is False:
            reason = "is inactive"
        elif "period" in rp and not _covers(rp.get("period"), ctx.now):
            reason = "is outside its period"
        elif not pids:
            reason = "has no fødselsnummer or D-nummer"
        elif not codes:
            reason = "has no parental responsibility"
        elif not codes & policy.parental_codes:
            reason = (
                f"has parental responsibility code {', '.join(sorted(codes))}, "
                "which gives no right to read or consent"
            )
        elif ended:
            reason = (
                f"no longer has parental responsibility: the child has turned "
                f"{policy.guardian_until_age}"
            )
        if reason is None:
            guardian = Guardian(
                rp_id=rp_id,
                reference=f"RelatedPerson/{rp_id}",
                pids=pids,
                codes=codes & policy.parental_codes,
            )
            ctx.guardians[rp_id] = guardian
            for pid in pids:
                ctx.guardian_by_pid.setdefault(pid, guardian)
        else:
            ctx.not_guardian[rp_id] = reason
            for pid in pids:
                ctx.not_guardian_by_pid.setdefault(pid, f"RelatedPerson/{rp_id} {reason}")
    for pid in ctx.guardian_by_pid:
        ctx.not_guardian_by_pid.pop(pid, None)


def signatures(cc: CompiledConsent, ctx: LogContext) -> Signatures:
    """Judge the performers of a Consent by rule 5 (who can consent) at `now`."""
    policy = ctx.policy
    signed: dict[str, Guardian] = {}
    youth = False
    problems: list[str] = []
    age_limit = max(policy.consent_age_for(domain) for domain in cc.domains)
    for (kind, value), label in zip(cc.performers, cc.performer_texts, strict=True):
        is_child = False
        if kind == "RelatedPerson":
            guardian = ctx.guardians.get(value)
            if guardian is None:
                why = ctx.not_guardian.get(value, "is not a related person of this child")
                problems.append(f"{label} {why}")
                continue
            signed[guardian.rp_id] = guardian
        elif kind == "Patient":
            if value != ctx.patient_id:
                problems.append(f"{label} is not this child")
                continue
            is_child = True
        elif kind == "pid":
            guardian = ctx.guardian_by_pid.get(value)
            if guardian is not None:
                signed[guardian.rp_id] = guardian
            elif value in ctx.patient_pids:
                is_child = True
            else:
                problems.append(f"{label} is neither a guardian nor the child")
                continue
        else:
            problems.append(f"{label} cannot consent")
            continue
        if is_child:
            if ctx.birth is None or ctx.age is None:
                problems.append(
                    "the child's age is unknown (no birthDate or readable fødselsnummer)"
                )
                continue
            # Capacity is judged when the form was signed: a form signed at 15 does not
            # become a valid consent on the sixteenth birthday.
            at_signing = age_on(ctx.birth, cc.signed) if cc.signed is not None else ctx.age
            age = min(at_signing, ctx.age)
            if age >= age_limit:
                youth = True
            else:
                domains = ", ".join(cc.domains)
                problems.append(
                    f"the child was {age} when signing, under the consent age {age_limit} "
                    f"({domains})"
                )
    if youth:
        return Signatures(True, True, "the youth", "")
    if not signed:
        problem = "; ".join(problems) if problems else "it has no performer"
        return Signatures(False, False, "", f"no performer can consent: {problem}")
    signers = ", ".join(g.reference for g in signed.values()) + " (guardian)"
    if policy.guardians_required == "all":
        missing = [g.reference for g in ctx.guardians.values() if g.joint and g.rp_id not in signed]
        if missing:
            return Signatures(
                True,
                False,
                signers,
                "the policy requires every guardian with joint responsibility to sign; "
                f"{', '.join(missing)} has not",
            )
    return Signatures(True, True, signers, "")


def _validity(cc: CompiledConsent, ctx: LogContext) -> tuple[bool, str]:
    if cc.resource.get("resourceType", "Consent") != "Consent":
        return False, "it is not a Consent"
    if cc.patient != ("Patient", ctx.patient_id):
        return False, f"it is for another patient ({cc.patient_text})"
    if cc.status != "active":
        return False, _STATUS_REASONS.get(str(cc.status), f"its status is {cc.status!r}")
    if not cc.scope_ok:
        return False, "its scope is not consentscope#patient-privacy"
    if cc.root is None:
        return False, cc.root_error or "it has no provision"
    if cc.period_error is not None:
        return False, cc.period_error
    start_text, end_text = cc.period_text
    if cc.period is not None:
        start, end = cc.period
        if start is not None and not reached(ctx.now, start):
            return False, f"it starts {start_text}"
        if end is not None and not not_passed(ctx.now, end):
            return False, f"it expired {end_text}"
    verdict = signatures(cc, ctx)
    if not verdict.complete:
        return False, verdict.problem
    until = f"until {end_text}" if end_text else "with no expiry (provision.period.end not set)"
    return True, f"active, signed by {verdict.signers}, valid {until}"


def log_context(log: ChildLog, policy: ConsentPolicy, now: datetime) -> LogContext:
    """Return the memoised facts of a log for this policy and instant."""
    memo = log._memo
    cached = memo.get("context")
    if (
        cached is not None
        and (cached.policy is policy or cached.policy == policy)
        and (cached.now is now or (cached.now == now and cached.now.utcoffset() == now.utcoffset()))
    ):
        ctx: LogContext = cached
        return ctx
    compiled: tuple[CompiledConsent, ...] | None = memo.get("compiled")
    if compiled is None:
        compiled = tuple(compile_consent(c) for c in log.consents)
        memo["compiled"] = compiled
    pids = person_ids(log.patient)
    birth = _birth(log.patient, pids)
    ctx = LogContext(
        policy=policy,
        now=now,
        patient_id=log.patient_id,
        patient_pids=pids,
        birth=birth,
        age=age_on(birth, now.date()) if birth is not None else None,
        guardians={},
        guardian_by_pid={},
        not_guardian={},
        not_guardian_by_pid={},
    )
    _guardians(log, ctx)
    states = []
    for cc in compiled:
        valid, reason = _validity(cc, ctx)
        states.append(ConsentState(cc, valid, reason))
    ctx.states = tuple(states)
    ctx.valid = tuple(s.compiled for s in states if s.valid)
    memo["context"] = ctx
    return ctx


def actor_named(keys: frozenset[ActorKey], cc: CompiledConsent) -> bool:
    """Return whether a Consent names the actor anywhere (provision actor or custodian)."""
    return not keys.isdisjoint(cc.named)
