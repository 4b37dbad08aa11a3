"""Random provision trees: type-level answers and readable_types bound the exact decision.

For every generated Consent set, actor and resource: if `decide` permits the resource, the
type-level question and `readable_types` must admit its type; if `readable_types` says no
per-resource check is needed, `decide` must permit every resource of an admitted type.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from consent import AccessRequest, Action, ConsentPolicy, decide, readable_types
from tests.consent.builders import (
    COMM_CS,
    HEALTH,
    HEALTH_SYSTEM,
    KG_SYSTEM,
    KINDERGARTEN,
    NAV_SYSTEM,
    NOW,
    R_LABEL,
    Json,
    consent,
    entry,
    log,
    org,
    provision,
)

POLICY = ConsentPolicy()
TYPES = ["Task", "Communication", "Goal"]
LYSGLIMT = {"system": COMM_CS, "code": "lysglimt"}


def _maybe(rng: random.Random, value: Any) -> Any:
    return value if rng.random() < 0.35 else None


def _tree(rng: random.Random, depth: int) -> Json:
    actors = _maybe(rng, rng.sample([org(KINDERGARTEN), org(HEALTH)], rng.randint(1, 2)))
    nested = (
        [_tree(rng, depth + 1) for _ in range(rng.randint(1, 2))]
        if depth < 3 and rng.random() < 0.5
        else None
    )
    return provision(
        rng.choice(["permit", "deny"]) if depth else rng.choice(["permit", "permit", "deny"]),
        actors=actors,
        classes=_maybe(rng, rng.sample(TYPES, rng.randint(1, 2))),
        actions=_maybe(rng, rng.sample(["access", "collect", "correct"], rng.randint(1, 2))),
        labels=_maybe(rng, [R_LABEL]),
        codes=_maybe(rng, [LYSGLIMT]),
        nested=nested,
    )


def _resources(rng: random.Random) -> list[Json]:
    found = []
    for rtype in TYPES:
        for labelled in (False, True):
            resource = entry(
                rtype,
                labels=[R_LABEL] if labelled else None,
                category=rng.choice(["lysglimt", "note"]),
            )
            found.append(resource)
    return found


@pytest.mark.parametrize("seed", range(150))
def test_type_level_and_readable_types_bound_decide(seed: int) -> None:
    rng = random.Random(seed)
    consents = [consent(f"c{n}", root=_tree(rng, 0)) for n in range(rng.randint(1, 3))]
    child_log = log(*consents)
    for actor in (KG_SYSTEM, HEALTH_SYSTEM, NAV_SYSTEM):
        access = readable_types(actor=actor, log=child_log, policy=POLICY, now=NOW)
        for action in (Action.READ, Action.WRITE, Action.DELIVER):
            for resource in _resources(rng):
                rtype = resource["resourceType"]
                exact = decide(
                    actor=actor,
                    log=child_log,
                    policy=POLICY,
                    now=NOW,
                    decision_id="e",
                    request=AccessRequest(action=action, resource_type=rtype, resource=resource),
                )
                typed = decide(
                    actor=actor,
                    log=child_log,
                    policy=POLICY,
                    now=NOW,
                    decision_id="t",
                    request=AccessRequest(action=action, resource_type=rtype),
                )
                if exact.permitted:
                    assert typed.permitted, (seed, exact.reason, typed.reason)
                if action is Action.READ:
                    if exact.permitted:
                        assert rtype in access.types, (seed, exact.reason)
                    if rtype in access.types and not access.needs_resource_check:
                        assert exact.permitted, (seed, exact.reason)


@pytest.mark.parametrize("seed", range(60))
def test_readable_types_among_one_type_answers_as_for_all_types(seed: int) -> None:
    # the service asks about the searched type only; the answer for it must not change
    rng = random.Random(seed)
    consents = [consent(f"c{n}", root=_tree(rng, 0)) for n in range(rng.randint(1, 3))]
    child_log = log(*consents)
    for actor in (KG_SYSTEM, HEALTH_SYSTEM, NAV_SYSTEM):
        every = readable_types(actor=actor, log=child_log, policy=POLICY, now=NOW)
        for rtype in (*TYPES, "Patient", "Consent", "CarePlan"):
            one = readable_types(actor=actor, log=child_log, policy=POLICY, now=NOW, among=(rtype,))
            assert (rtype in one.types) == (rtype in every.types), (seed, rtype)
            assert one.types <= every.types
            assert one.excluded_labels == every.excluded_labels
            if rtype in one.types and not one.needs_resource_check:
                # judged alone, "no per-hit check" must still hold for every resource of it
                for resource in _resources(rng):
                    if resource["resourceType"] != rtype:
                        continue
                    exact = decide(
                        actor=actor,
                        log=child_log,
                        policy=POLICY,
                        now=NOW,
                        decision_id="e",
                        request=AccessRequest(
                            action=Action.READ, resource_type=rtype, resource=resource
                        ),
                    )
                    labels = {
                        (c["system"], c["code"])
                        for c in resource.get("meta", {}).get("security", [])
                    }
                    assert exact.permitted or not labels.isdisjoint(one.excluded_labels)
