"""Limits on what one request may ask of the server: JSON nesting, search size, Bundle size.

The body size limit lives in service/api/middleware.py (it must act before the body is read);
these act on the parsed request, before any recursive code (validation, JSON Patch, the
Bundle processor) sees it. Each raises a domain error, so the answer is an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.errors import BadRequest, Issue, PayloadTooLarge

__all__ = [
    "RequestTooCostly",
    "check_bundle_entries",
    "check_json_depth",
    "check_search_size",
    "json_depth_exceeds",
]


class RequestTooCostly(BadRequest):
    """The request is well-formed but larger or deeper than the configured limits (400)."""

    code = "too-costly"


def json_depth_exceeds(value: Any, max_depth: int) -> bool:
    """Return whether objects and arrays nest deeper than max_depth levels in value."""
    # iterative on purpose: the point is to stop input that would exhaust the stack
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def check_json_depth(value: Any, *, max_depth: int) -> None:
    """Raise RequestTooCostly when a parsed JSON body nests deeper than max_depth."""
    if isinstance(value, dict | list) and json_depth_exceeds(value, max_depth):
        raise RequestTooCostly(
            f"The JSON body nests objects and arrays deeper than the limit of {max_depth} levels",
            issues=[
                Issue(
                    "too-costly",
                    f"The JSON body nests objects and arrays deeper than the limit of "
                    f"{max_depth} levels",
                )
            ],
        )


def check_search_size(
    pairs: Sequence[tuple[str, str]], *, max_params: int, max_values: int
) -> None:
    """Raise RequestTooCostly when a search has too many parameters or OR-values."""
    if len(pairs) > max_params:
        message = f"The search has {len(pairs)} parameters; the limit is {max_params}"
        raise RequestTooCostly(message, issues=[Issue("too-costly", message)])
    # a,b,c is one parameter but three SQL alternatives; count what the database will see
    values = sum(value.count(",") + 1 for _, value in pairs)
    if values > max_values:
        message = f"The search has {values} values in all; the limit is {max_values}"
        raise RequestTooCostly(message, issues=[Issue("too-costly", message)])


def check_bundle_entries(body: Any, *, max_entries: int) -> None:
    """Raise PayloadTooLarge when a Bundle has more than max_entries entries.

    The types of `entry.request` are checked by the Bundle processor itself (service/bundles),
    so that Bundles from the bus get the same answer.
    """
    entries = body.get("entry") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return
    if len(entries) > max_entries:
        message = f"The Bundle has {len(entries)} entries; the limit is {max_entries}"
        raise PayloadTooLarge(message, issues=[Issue("too-costly", message)])
