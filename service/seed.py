"""Load example data (the demo child's log) through the normal transaction path."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import orjson

from service.access import RequestContext, ScopeAccessPolicy
from service.api.deps import Services
from service.auth import Principal, PrincipalKind, ScopeSet
from service.bundles import process_bundle
from service.repository import FhirRepository

__all__ = ["load_bundle", "seed_principal"]


def seed_principal() -> Principal:
    """Return the internal system principal that loads seed data."""
    return Principal(
        kind=PrincipalKind.SYSTEM,
        issuer="urn:stafett:internal",
        subject="stafett-seed",
        scopes=ScopeSet.parse("system/*.cruds"),
        expires_at=int(time.time()) + 300,
        client_id="stafett-seed",
    )


def load_bundle(services: Services, path: Path) -> bytes | None:
    """Process a batch/transaction Bundle file as the internal seed principal.

    A Bundle whose Patients (found by their ifNoneExist criteria) all exist already has been
    loaded before; it is skipped so that `make run` can be repeated without duplicating logs.
    Returns the response Bundle, or None when skipped.
    """
    body = orjson.loads(path.read_bytes())
    ctx = RequestContext(principal=seed_principal(), request_id="seed")
    # Seeding is the operator loading data with database rights, not a client of the API:
    # it runs without the consent policy (the demo log carries its own Consent).
    config = replace(services.repository, policy=ScopeAccessPolicy(), audit=None)
    repo = FhirRepository(config, ctx)
    patients = [
        entry["request"]["ifNoneExist"]
        for entry in body.get("entry", [])
        if entry.get("request", {}).get("url") == "Patient"
        and entry.get("request", {}).get("ifNoneExist")
    ]
    if patients and all(
        repo.find_conditional(resource_type="Patient", criteria=criteria, conn=None)
        for criteria in patients
    ):
        return None
    return process_bundle(repo, body, services.settings.fhir_base)
