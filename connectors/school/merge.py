"""Merge a vendor's version of a resource into the version the other side already holds.

Vendor formats carry less than FHIR (the school keeps one evaluation, the health station no
evaluation authors), so replacing a resource with a vendor's version would lose what others
wrote: earlier evaluations, requester, goals, security labels, other systems' identifiers.
Elements the vendor sends replace the current ones; elements it cannot express keep their
value; identifiers and evaluations are united.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "first_seen_team",
    "merge_annotations",
    "merge_careteam",
    "merge_identifiers",
    "merge_resource",
    "merge_task",
]

_KEPT_META = ("security", "tag")
_HOLDER = "stafettholder"


def merge_identifiers(current: Any, incoming: Any) -> list[dict[str, Any]]:
    """Return current identifiers with incoming ones added (incoming wins per system)."""
    out: list[dict[str, Any]] = [dict(i) for i in current or () if isinstance(i, Mapping)]
    for item in incoming or ():
        if not isinstance(item, Mapping):
            continue
        same = [i for i, old in enumerate(out) if old.get("system") == item.get("system")]
        if same:
            out[same[0]] = dict(item)
        else:
            out.append(dict(item))
    return out


def _note_key(note: Mapping[str, Any]) -> tuple[str, str]:
    return str(note.get("time") or "")[:10], " ".join(str(note.get("text") or "").split())


def merge_annotations(current: Any, incoming: Any) -> list[dict[str, Any]]:
    """Return current annotations plus incoming ones not already there (same day and text)."""
    out = [dict(n) for n in current or () if isinstance(n, Mapping)]
    seen = {_note_key(n) for n in out}
    for note in incoming or ():
        if isinstance(note, Mapping) and _note_key(note) not in seen:
            out.append(dict(note))
            seen.add(_note_key(note))
    return out


def merge_resource(current: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """Return incoming over current: same id, united identifiers, labels and tags kept."""
    merged = {k: v for k, v in current.items() if k not in ("meta", "text")}
    merged.update({k: v for k, v in incoming.items() if k != "meta"})
    merged["id"] = current["id"]
    identifiers = merge_identifiers(current.get("identifier"), incoming.get("identifier"))
    if identifiers:
        merged["identifier"] = identifiers
    meta = {k: v for k, v in (current.get("meta") or {}).items() if k in _KEPT_META}
    meta.update({k: v for k, v in (incoming.get("meta") or {}).items() if k != "versionId"})
    meta.pop("lastUpdated", None)
    if meta:
        merged["meta"] = meta
    return merged


def _merged_dict(current: Any, incoming: Any) -> Any:
    if isinstance(current, Mapping) and isinstance(incoming, Mapping):
        out = dict(current)
        for key, value in incoming.items():
            out[key] = _merged_dict(current.get(key), value)
        return out
    return incoming if incoming is not None else current


def _outputs(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [o for o in task.get("output") or () if isinstance(o, dict)]


def merge_task(current: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a measure Task: the log, child and earlier evaluations stay as Stafett has them."""
    merged = merge_resource(current, incoming)
    for key in ("basedOn", "for"):
        if key in current:
            merged[key] = current[key]
    for element in ("executionPeriod", "restriction", "code"):
        if element in current or element in incoming:
            merged[element] = _merged_dict(current.get(element), incoming.get(element))
    outputs = _outputs(current)
    seen = {_note_key(o.get("valueAnnotation") or {}) for o in outputs}
    for output in _outputs(incoming):
        note = _note_key(output.get("valueAnnotation") or {})
        if note not in seen:
            outputs.append(output)
            seen.add(note)
    if outputs:
        merged["output"] = outputs
    return merged


def _is_holder(participant: Mapping[str, Any]) -> bool:
    roles = participant.get("role") or ()
    return any(
        coding.get("code") == _HOLDER
        for role in roles
        if isinstance(role, Mapping)
        for coding in role.get("coding") or ()
        if isinstance(coding, Mapping)
    )


def _active(participant: Mapping[str, Any]) -> bool:
    return not (participant.get("period") or {}).get("end")


def merge_careteam(
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    *,
    ours: Callable[[Any], str | None],
    today: str,
) -> dict[str, Any]:
    """Merge a vendor's CareTeam keeping the hand-over history (stafettlogg-fhir.md §9).

    `ours(member)` returns the vendor's employee id of a member who is one of its employees,
    else None. A new stafettholder from the vendor gets `period.start` = today and the
    vendor's previous holder `period.end` = today; when the log has been handed over to
    another service in Stafett, the vendor's (stale) holder is not made stafettholder again.
    """
    merged = merge_resource(current, incoming)
    participants = [dict(p) for p in current.get("participant") or () if isinstance(p, Mapping)]
    for new in incoming.get("participant") or ():
        if not isinstance(new, Mapping):
            continue
        wanted = ours(new.get("member"))
        holders = [p for p in participants if _is_holder(p) and _active(p)]
        if any(wanted is not None and ours(p.get("member")) == wanted for p in holders):
            continue  # the same person still holds the log
        if any(ours(p.get("member")) is None for p in holders):
            # handed over to another service in Stafett: that decision stands, and so does
            # the mirror of the holder's organisation
            if "managingOrganization" in current:
                merged["managingOrganization"] = current["managingOrganization"]
            continue
        for previous in holders:
            previous["period"] = {**(previous.get("period") or {}), "end": today}
        participants.append({**new, "period": {"start": today}})
    if participants:
        merged["participant"] = participants
    return merged


def first_seen_team(team: Mapping[str, Any], *, today: str) -> dict[str, Any]:
    """Return a CareTeam seen for the first time with its participants starting today."""
    participants = [
        p if (p.get("period") or {}).get("start") else {**p, "period": {"start": today}}
        for p in team.get("participant") or ()
        if isinstance(p, Mapping)
    ]
    return {**team, "participant": participants} if participants else dict(team)
