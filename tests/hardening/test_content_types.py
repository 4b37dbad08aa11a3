"""Strict content types: FHIR JSON in, JSON Patch for PATCH, a form for POST _search; else 415."""

from __future__ import annotations

import httpx
import pytest

from tests.hardening.conftest import outcome_codes

pytestmark = pytest.mark.e2e

PATIENT = b'{"resourceType":"Patient","gender":"female"}'


@pytest.fixture(scope="module")
def patient_id(system_client: httpx.Client) -> str:
    """Return the id of a Patient to update and patch."""
    response = system_client.post(
        "/Patient", content=PATIENT, headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 201
    return str(response.json()["id"])


@pytest.mark.parametrize(
    "content_type",
    ["application/fhir+json", "application/json", "application/fhir+json; charset=utf-8"],
)
def test_fhir_json_is_accepted(system_client: httpx.Client, content_type: str) -> None:
    response = system_client.post(
        "/Patient", content=PATIENT, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/xml",
        "application/fhir+xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-patch+json",
        "text/html",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/Patient"), ("POST", ""), ("PUT", "/Patient/{id}")]
)
def test_other_bodies_get_415(
    system_client: httpx.Client,
    patient_id: str,
    content_type: str | None,
    method: str,
    path: str,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    request = system_client.build_request(
        method, path.format(id=patient_id), content=PATIENT, headers=headers
    )
    if content_type is None:
        request.headers.pop("Content-Type", None)
    response = system_client.send(request)
    assert response.status_code == 415, response.text
    assert outcome_codes(response) == ["not-supported"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/fhir+json", "text/plain"]
)
def test_patch_takes_json_patch_only(
    system_client: httpx.Client, patient_id: str, content_type: str
) -> None:
    patch = b'[{"op":"replace","path":"/gender","value":"male"}]'
    response = system_client.patch(
        f"/Patient/{patient_id}", content=patch, headers={"Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    response = system_client.patch(
        f"/Patient/{patient_id}",
        content=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data"])
def test_post_search_takes_a_form_only(system_client: httpx.Client, content_type: str) -> None:
    response = system_client.post(
        "/Patient/_search", content=b"gender=male", headers={"Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    response = system_client.post(
        "/Patient/_search",
        content=b"gender=male",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def test_xml_is_not_served(system_client: httpx.Client, patient_id: str) -> None:
    response = system_client.get(
        f"/Patient/{patient_id}", headers={"Accept": "application/fhir+xml"}
    )
    assert response.status_code == 406
    response = system_client.get(f"/Patient/{patient_id}", params={"_format": "xml"})
    assert response.status_code == 406
