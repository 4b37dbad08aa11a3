"""schemathesis against the OpenAPI document the server serves, with real bearer tokens.

Every operation of /openapi.json gets positive examples (valid by the document) and negative
ones (invalid by it) over real HTTP. The run is bounded: STAFETT_SCHEMATHESIS_EXAMPLES
examples per operation and mode (default 6, about a minute); a longer run is documented in
docs/security/hostile-input.md.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import FHIR_JSON, LiveServer, live_server, synthetic_orgnr

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = int(os.environ.get("STAFETT_SCHEMATHESIS_EXAMPLES", "6"))
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [not_a_server_error, content_type_conformance, negative_data_rejection]


@pytest.fixture(scope="module", params=["scopes-only", "consent"])
def api_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Run Stafett with SMART scopes only (writes reach storage) and with consent on."""
    data_dir = tmp_path_factory.mktemp("data")
    with live_server(
        database_url=f"sqlite:///{data_dir / 'stafett.db'}",
        data_dir=data_dir,
        access_policy=request.param,
    ) as live:
        yield live


def test_openapi_document_describes_the_fhir_api(default_server: LiveServer) -> None:
    document = httpx.get(default_server.base_url + "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    assert "get" in paths["/fhir/Patient"]
    assert "post" in paths["/fhir/Patient"]
    assert {"get", "put", "patch", "delete"} <= set(paths["/fhir/Task/{id}"])
    assert "post" not in paths["/fhir/AuditEvent"]  # written by Stafett only
    names = {p["name"] for p in paths["/fhir/Task"]["get"]["parameters"]}
    assert {"subject", "status", "_count", "_include"} <= names


def _exercise(
    strategy: st.SearchStrategy[schemathesis.Case],
    checks: list[object],
    *,
    base_url: str,
    auth: dict[str, str],
    statuses: Counter[int],
    failures: list[str],
) -> None:
    """Run max EXAMPLES cases of one strategy, recording statuses and check failures."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same inputs on every run of `make test`
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=auth)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)  # type: ignore[arg-type]
        except Exception as exc:  # schemathesis' FailureGroup, one per failing check
            failures.append(f"{case.method} {case.formatted_path}: {str(exc)[:600]}")

    # negative data is unsatisfiable for an operation with nothing to make invalid (metadata)
    with contextlib.suppress(Unsatisfiable):
        run()


def test_schemathesis_finds_no_server_errors(api_server: LiveServer) -> None:
    token = api_server.system_token(org=synthetic_orgnr())
    auth = {"Authorization": f"Bearer {token}"}
    seeded = httpx.post(
        api_server.fhir + "/Patient",
        content=b'{"resourceType":"Patient","gender":"female"}',
        headers={**auth, "Content-Type": FHIR_JSON},
    )
    known_patient = seeded.json()["id"] if seeded.status_code == 201 else "unknown"
    schema = schemathesis.openapi.from_url(api_server.base_url + "/openapi.json")
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode, checks in (
            (GenerationMode.POSITIVE, POSITIVE_CHECKS),
            (GenerationMode.NEGATIVE, NEGATIVE_CHECKS),
        ):
            strategy = operation.as_strategy(generation_mode=mode)
            if "{id}" in operation.path and operation.path.startswith("/fhir/Patient/"):
                # half the examples on a Patient that exists, to get past the 404
                strategy = st.one_of(
                    strategy,
                    operation.as_strategy(
                        generation_mode=mode, path_parameters={"id": known_patient}
                    ),
                )
            _exercise(
                strategy,
                list(checks),
                base_url=api_server.base_url,
                auth=auth,
                statuses=statuses,
                failures=failures,
            )
    elapsed = time.monotonic() - started
    print(
        f"\nschemathesis ({api_server.settings.access_policy}): {sum(statuses.values())} "
        f"requests over {operations} operations in {elapsed:.1f} s; "
        f"statuses {dict(sorted(statuses.items()))}; {len(failures)} check failures"
    )
    for failure in failures[:40]:
        print(failure)
    assert sum(statuses.values()) > operations
    assert not [status for status in statuses if status >= 500], failures
    assert not failures
