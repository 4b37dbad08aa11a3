"""Which fields are sealed, per resource type, and how a resource is split and merged again.

The sealed fields are the free text and attachments of a child's log (docs/stafettlogg-fhir.md):
the area of concern, notes, evaluations, messages and the signed consent form. They are taken
out of the stored JSON before it is written and indexed, and stored encrypted beside it; a read
puts them back. What stays in clear is what search, consent enforcement and the workers need
(identifiers, names, references, codes, dates): see docs/security/encryption-at-rest.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from service.crypto.envelope import Envelope
from service.crypto.errors import SealBroken

__all__ = ["PLAINTEXT", "SEALED_FIELDS", "FieldSealer", "SealedContent", "sealed_paths"]

#: `sealed_key` of a row whose sensitive fields are stored in clear: written before migration
#: 0007 or with encryption off. `stafett keys rotate` encrypts them.
PLAINTEXT = "-"

# Dotted paths; `*` steps into every element of a list. A whole element is sealed where none
# of it is searched or needed by the workers; otherwise only its free-text part.
_ANSWERS = tuple(
    f"{side}.*.value{kind}"
    for side in ("input", "output")
    for kind in ("String", "Markdown", "Annotation", "Attachment")
)
SEALED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "CarePlan": (
        "text",
        "description",
        "note",
        "activity.*.progress",
        "activity.*.detail.description",
    ),
    "CareTeam": ("text", "note"),
    "Goal": ("text", "description.text", "note", "statusReason"),
    # the coded level outcome (output valueCodeableConcept) stays clear: statistics count it
    "Task": ("text", "description", "note", "statusReason.text", "businessStatus.text", *_ANSWERS),
    "Communication": ("text", "payload", "note"),
    # the provisions stay clear: consent enforcement reads them on every access
    "Consent": ("text", "sourceAttachment"),
    "Patient": ("text", "photo"),
    "RelatedPerson": ("text", "photo"),
}

_Location = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class SealedContent:
    """A resource version ready to store: its JSON without the sealed fields and their seal."""

    content: str
    data: dict[str, Any]
    sealed: bytes | None
    key_id: str | None


def sealed_paths(resource_type: str) -> tuple[tuple[str, ...], ...]:
    """Return the sealed paths of a type as step tuples."""
    return tuple(tuple(path.split(".")) for path in SEALED_FIELDS.get(resource_type, ()))


def _take(node: Any, steps: tuple[str, ...], at: _Location, out: list[Any]) -> None:
    step = steps[0]
    if step == "*":
        if isinstance(node, list):
            for index, item in enumerate(node):
                _take(item, steps[1:], (*at, index), out)
        return
    if not isinstance(node, dict) or step not in node:
        return
    if len(steps) == 1:
        out.append([[*at, step], node.pop(step)])
    else:
        _take(node[step], steps[1:], (*at, step), out)


def _put(document: dict[str, Any], location: list[Any], value: Any) -> None:
    node: Any = document
    for step in location[:-1]:
        node = node[step]
    node[location[-1]] = value


def _context(resource_type: str, id: str, version: object) -> str:
    return f"{resource_type}/{id}/_history/{version}"


class FieldSealer:
    """Splits the sealed fields off a resource before it is stored and merges them on read."""

    def __init__(
        self,
        envelope: Envelope | None,
        fields: Mapping[str, tuple[str, ...]] = SEALED_FIELDS,
    ) -> None:
        self.envelope = envelope
        self._paths = {t: tuple(tuple(p.split(".")) for p in paths) for t, paths in fields.items()}
        # cheap test for the common case: none of the type's sealed elements is present
        self._heads = {t: frozenset(p[0] for p in paths) for t, paths in self._paths.items()}

    def has_sealed_fields(self, resource_type: str, data: Mapping[str, Any]) -> bool:
        """Return whether a resource carries any element that may hold sealed fields."""
        heads = self._heads.get(resource_type)
        return heads is not None and not heads.isdisjoint(data)

    def split(
        self, resource_type: str, id: str, content: str, data: Mapping[str, Any]
    ) -> SealedContent | None:
        """Take the sealed fields out of a finalised resource; None when it has none."""
        if not self.has_sealed_fields(resource_type, data):
            return None
        stripped: dict[str, Any] = orjson.loads(content)  # a private copy to cut from
        taken: list[Any] = []
        for steps in self._paths[resource_type]:
            _take(stripped, steps, (), taken)
        if not taken:
            return None
        if self.envelope is None:
            return SealedContent(content, dict(data), None, PLAINTEXT)
        version = (stripped.get("meta") or {}).get("versionId")
        sealed = self.envelope.seal(
            orjson.dumps(taken), context=_context(resource_type, id, version)
        )
        return SealedContent(
            orjson.dumps(stripped).decode(), stripped, sealed, self.envelope.active_key_id()
        )

    def merge(self, resource_type: str, id: str, content: str, sealed: bytes) -> str:
        """Return the resource's full JSON: the stored JSON with its sealed fields opened."""
        if self.envelope is None:
            raise SealBroken(
                f"{resource_type}/{id} is stored encrypted but encryption at rest is off"
            )
        document: dict[str, Any] = orjson.loads(content)
        version = (document.get("meta") or {}).get("versionId")
        opened = self.envelope.open(sealed, context=_context(resource_type, id, version))
        try:
            for location, value in orjson.loads(opened):
                _put(document, location, value)
        except (KeyError, IndexError, TypeError) as exc:
            raise SealBroken(f"the stored JSON of {resource_type}/{id} was altered") from exc
        # resourceType first, as the renderer serves it without another pass
        ordered = {"resourceType": document.pop("resourceType"), "id": document.pop("id", id)}
        ordered.update(document)
        return orjson.dumps(ordered).decode()

    def context_of(self, resource_type: str, id: str, content: str) -> str:
        """Return the encryption context of a stored version (for rotation)."""
        document = orjson.loads(content)
        return _context(resource_type, id, (document.get("meta") or {}).get("versionId"))
