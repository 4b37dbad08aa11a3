"""SMART scope parsing and the grant check, as a table."""

from __future__ import annotations

import pytest

from service.auth import Interaction, ScopeSet
from service.auth.scopes import ScopeContext, SmartScope

C, R, U, D, S = (
    Interaction.CREATE,
    Interaction.READ,
    Interaction.UPDATE,
    Interaction.DELETE,
    Interaction.SEARCH,
)
PATIENT, USER, SYSTEM = ScopeContext.PATIENT, ScopeContext.USER, ScopeContext.SYSTEM

# (scope text, context, interaction, resource type, permitted?)
PERMIT_CASES = [
    # SMART v2
    ("user/CarePlan.rs", USER, R, "CarePlan", True),
    ("user/CarePlan.rs", USER, S, "CarePlan", True),
    ("user/CarePlan.rs", USER, C, "CarePlan", False),
    ("user/CarePlan.rs", USER, R, "Task", False),
    ("user/CarePlan.rs", PATIENT, R, "CarePlan", False),
    ("system/*.cruds", SYSTEM, D, "Consent", True),
    ("system/*.cruds", USER, R, "Consent", False),
    ("patient/*.rs", PATIENT, S, "Communication", True),
    ("patient/*.rs", PATIENT, U, "Communication", False),
    ("user/Task.cu", USER, U, "Task", True),
    ("user/Task.cu", USER, R, "Task", False),
    ("user/Task.d", USER, D, "Task", True),
    # SMART v1
    ("user/*.read", USER, R, "CarePlan", True),
    ("user/*.read", USER, S, "CarePlan", True),
    ("user/*.read", USER, C, "CarePlan", False),
    ("user/*.write", USER, C, "CarePlan", True),
    ("user/*.write", USER, U, "CarePlan", True),
    ("user/*.write", USER, D, "CarePlan", True),
    ("user/*.write", USER, R, "CarePlan", False),
    ("patient/Patient.*", PATIENT, S, "Patient", True),
    ("patient/Patient.*", PATIENT, S, "Observation", False),
    # query-restricted SMART v2 scopes grant nothing until the filter is enforced
    ("patient/Observation.rs?category=laboratory", PATIENT, R, "Observation", False),
    ("user/*.cruds?_tag=x", USER, R, "CarePlan", False),
    # malformed ones are ignored, so they grant nothing
    ("user/CarePlan.sr", USER, R, "CarePlan", False),  # letters out of cruds order
    ("user/CarePlan.rr", USER, R, "CarePlan", False),
    ("user/CarePlan.", USER, R, "CarePlan", False),
    ("user/CarePlan.x", USER, R, "CarePlan", False),
    ("user/careplan.rs", USER, R, "careplan", False),  # resource types start upper-case
    ("User/CarePlan.rs", USER, R, "CarePlan", False),
    ("users/CarePlan.rs", USER, R, "CarePlan", False),
    ("user/CarePlan.read?x=1", USER, R, "CarePlan", False),  # v1 has no query part
    ("user/CarePlan.rs extra", USER, R, "CarePlan", True),  # the other word is just ignored
    # several scopes combine
    ("openid user/CarePlan.r user/CarePlan.s", USER, S, "CarePlan", True),
]


@pytest.mark.parametrize(
    ("text", "context", "interaction", "resource_type", "expected"), PERMIT_CASES
)
def test_permits(
    text: str,
    context: ScopeContext,
    interaction: Interaction,
    resource_type: str,
    expected: bool,
) -> None:
    assert ScopeSet.parse(text).permits(context, interaction, resource_type) is expected


def test_parse_drops_non_smart_scopes_and_keeps_the_rest() -> None:
    scopes = ScopeSet.parse(
        "openid profile nav:foo helseid://scopes/identity/pid user/CarePlan.rs system/*.cruds"
    )
    assert str(scopes) == "system/*.cruds user/CarePlan.rs"
    assert len(scopes) == 2


def test_parse_accepts_a_list() -> None:
    assert ScopeSet.parse(["openid", "user/*.rs"]) == ScopeSet.parse("user/*.rs openid")


def test_v1_scopes_are_shown_in_v2_form() -> None:
    assert str(ScopeSet.parse("user/*.read user/Task.write patient/Patient.*")) == (
        "patient/Patient.cruds user/*.rs user/Task.cud"
    )


def test_query_is_kept_for_audit_but_grants_nothing() -> None:
    scope = SmartScope.parse("patient/Observation.rs?category=laboratory")
    assert scope is not None
    assert scope.query == "category=laboratory"
    assert str(scope) == "patient/Observation.rs?category=laboratory"
    assert not scope.grants(PATIENT, R, "Observation")


def test_scope_set_is_frozen_and_hashable() -> None:
    a, b = ScopeSet.parse("user/*.rs"), ScopeSet.parse("user/*.rs")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.scopes = frozenset()  # type: ignore[misc]


def test_empty_scope_set() -> None:
    empty = ScopeSet.parse("")
    assert not empty
    assert not empty.permits(USER, R, "CarePlan")


def test_in_context() -> None:
    scopes = ScopeSet.parse("user/*.rs patient/*.rs")
    assert str(scopes.in_context(PATIENT)) == "patient/*.rs"
