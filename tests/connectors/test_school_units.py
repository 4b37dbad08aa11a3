"""The school connectors' parts without Stafett: merging, CSV rows, OAuth, the poll order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import ConnectorConfig
from connectors.school.client import SchoolClient
from connectors.school.csv_source import SchoolCsvSource, split_broken_rows
from connectors.school.merge import merge_careteam, merge_task
from connectors.school.source import SchoolSource
from connectors.state import LinkState
from simulators.common.server import running
from simulators.school.app import SchoolConfig, create_app

NORA = "15832151200"
SCHOOL = "927364514"
OPERATOR = "936451284"
SID = f"https://stafett.no/fhir/sid/{OPERATOR}/skolesystem"
HEADER = "tiltak_id;personnummer;tittel;status;fra_dato;evaluer_dato;ansvarlig_enhet;endret"
EVALUATION = {"coding": [{"system": "x", "code": "evaluation"}]}


def _config(system: str = "school", **settings: Any) -> ConnectorConfig:
    return ConnectorConfig.model_validate(
        {
            "name": "skole",
            "kind": "source",
            "system": system,
            "organization": SCHOOL,
            "operator": OPERATOR,
            "source_system": "skolesystem",
            "settings": settings,
        }
    )


def _output(time: str, text: str) -> dict[str, Any]:
    return {"type": EVALUATION, "valueAnnotation": {"time": time, "text": text}}


def test_a_task_merge_keeps_what_the_school_cannot_carry() -> None:
    current = {
        "resourceType": "Task",
        "id": "t1",
        "meta": {"versionId": "4", "security": [{"system": "s", "code": "R"}]},
        "identifier": [{"system": "https://kindergarten/tiltak", "value": "T-1"}],
        "basedOn": [{"reference": "CarePlan/kindergarten-log"}],
        "for": {"reference": "Patient/p1"},
        "requester": {"reference": "PractitionerRole/r1"},
        "restriction": {"period": {"start": "2026-09-01", "end": "2026-10-01"}},
        "output": [
            {
                "type": EVALUATION,
                "valueAnnotation": {
                    "time": "2026-10-01T12:00:00+02:00",
                    "text": "Første evaluering",
                    "authorReference": {"reference": "PractitionerRole/r1"},
                },
            }
        ],
        "status": "in-progress",
    }
    incoming = {
        "resourceType": "Task",
        "identifier": [{"system": f"{SID}/tiltak", "value": "9002"}],
        "basedOn": [{"reference": "CarePlan?identifier=school|5501"}],
        "for": {"reference": f"Patient?identifier=fnr|{NORA}"},
        "restriction": {"period": {"end": "2027-01-15"}},
        "output": [_output("2026-10-01", "Første evaluering"), _output("2027-01-15", "Ny")],
        "status": "on-hold",
    }
    merged = merge_task(current, incoming)
    assert merged["id"] == "t1"
    assert merged["status"] == "on-hold"
    assert merged["basedOn"] == current["basedOn"]
    assert merged["for"] == current["for"]
    assert merged["requester"] == current["requester"]
    assert merged["restriction"] == {"period": {"start": "2026-09-01", "end": "2027-01-15"}}
    assert [i["value"] for i in merged["identifier"]] == ["T-1", "9002"]
    assert [o["valueAnnotation"]["text"] for o in merged["output"]] == ["Første evaluering", "Ny"]
    assert "authorReference" in merged["output"][0]["valueAnnotation"]
    assert merged["meta"] == {"security": [{"system": "s", "code": "R"}]}


def _participant(member: str, start: str, end: str | None = None) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "role": [{"coding": [{"code": "stafettholder"}]}],
        "member": {"reference": member},
        "period": period,
    }


def _ours(member: Any) -> str | None:
    reference = str((member or {}).get("reference", ""))
    return reference.rpartition("|")[2] if "ansatt|" in reference else None


def test_a_new_teacher_takes_over_and_a_hand_over_in_stafett_stands() -> None:
    teacher = f"PractitionerRole?identifier={SID}/ansatt|L-3"
    current = {
        "resourceType": "CareTeam",
        "id": "team",
        "participant": [_participant(teacher, "2026-08-17")],
    }
    same = {"resourceType": "CareTeam", "participant": [{**_participant(teacher, "x")}]}
    assert (
        merge_careteam(current, same, ours=_ours, today="2026-12-01")["participant"]
        == (current["participant"])
    )
    new = f"PractitionerRole?identifier={SID}/ansatt|L-9"
    incoming = {"resourceType": "CareTeam", "participant": [{"member": {"reference": new}}]}
    merged = merge_careteam(current, incoming, ours=_ours, today="2026-12-01")
    assert [p["period"] for p in merged["participant"]] == [
        {"start": "2026-08-17", "end": "2026-12-01"},
        {"start": "2026-12-01"},
    ]
    nurse = _participant("PractitionerRole/nurse", "2026-11-01")
    handed_over = {
        **current,
        "participant": [_participant(teacher, "2026-08-17", "2026-11-01"), nurse],
    }
    handed_over["managingOrganization"] = [{"reference": "Organization/health"}]
    incoming["managingOrganization"] = [{"reference": "Organization/school"}]
    kept = merge_careteam(handed_over, incoming, ours=_ours, today="2026-12-01")
    assert kept["participant"] == handed_over["participant"]
    assert kept["managingOrganization"] == [{"reference": "Organization/health"}]


def test_rows_with_the_wrong_field_count_are_blanked_keeping_line_numbers() -> None:
    data = f'{HEADER}\r\n1;2;3\r\n9001;{NORA};"To\r\nlinjer";AKTIV;;;{SCHOOL};2026-09-07\r\n'
    patched, dead = split_broken_rows(data.encode(), "tiltak-20260907.csv")
    assert [d.record_id for d in dead] == ["tiltak-20260907.csv:line 2"]
    assert "expected 8 fields, found 3" in dead[0].reason
    lines = patched.decode().splitlines()
    assert lines[1] == ""
    assert lines[2].startswith("9001")


def _write(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_text("\r\n".join([HEADER, *rows]) + "\r\n", encoding="utf-8")
    return path


def test_the_csv_source_sends_each_row_version_once(tmp_path: Path) -> None:
    links = LinkState(None)
    source = SchoolCsvSource(_config("school-csv", folder=str(tmp_path)), links)
    row = f"9001;{NORA};Fast voksen;AKTIV;2026-08-17;2026-11-30;{SCHOOL};2026-09-07T09:12:00+02:00"
    bad = f"9002;{NORA};Ukjent;KANSKJE;;;{SCHOOL};2026-09-07T09:13:00+02:00"
    path = _write(tmp_path, "tiltak-20260907.csv", [row, bad])
    first = source.poll(None)
    assert [r.record_id for r in first.records] == ["tiltak-20260907.csv:line 2"]
    task = first.records[0].payload["entry"][0]
    assert task["request"] == {"method": "PUT", "url": f"Task?identifier={SID}/tiltak|9001"}
    assert [d.record_id for d in first.dead] == ["tiltak-20260907.csv:line 3"]
    assert source.poll(first.checkpoint).records == []
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # re-dropped
    again = source.poll(first.checkpoint)
    assert again.records == []
    assert [d.record_id for d in again.dead] == ["tiltak-20260907.csv:line 3"]
    changed = row.replace("AKTIV", "PAUSET").replace("09:12:00", "10:00:00")
    _write(tmp_path, "tiltak-20260908.csv", [changed])
    later = source.poll(again.checkpoint)
    assert [r.record_id for r in later.records] == ["tiltak-20260908.csv:line 2"]
    links.put("echo", "9001", "2026-09-09T08:00:00+02:00")  # the sink's own write
    echoed = row.replace("2026-09-07T09:12:00+02:00", "2026-09-09T08:00:00+02:00")
    _write(tmp_path, "tiltak-20260909.csv", [echoed])
    assert source.poll(later.checkpoint).records == []


@pytest.fixture(scope="module")
def school_url() -> Iterator[str]:
    with running(create_app(SchoolConfig(data_dir=None, expires_in=60))) as url:
        yield url


def test_the_token_is_cached_renewed_before_expiry_and_after_a_401(school_url: str) -> None:
    now = [0.0]
    client = SchoolClient(school_url, "stafett", "skole-dev-secret", clock=lambda: now[0])
    try:
        client.changed("elev", None)
        client.changed("tiltak", None)
        live = httpx.post(f"{school_url}/_sim/tokens/expire").json()["utlopt"]
        assert live == 1  # one token for both calls
        assert client.changed("samtykke", None) == []  # 401, a new token, the same call again
        now[0] = 49.0  # 60 s tokens are renewed 12 s early
        client.changed("elev", None)
        assert httpx.post(f"{school_url}/_sim/tokens/expire").json()["utlopt"] == 2
    finally:
        client.close()


class _FakeSchool:
    """Answers like the school's API from lists of records."""

    client_id = "stafett"

    def __init__(self, records: dict[str, list[dict[str, Any]]]) -> None:
        self.records = records

    def changed(self, kind: str, after: str | None) -> list[dict[str, Any]]:
        return [r for r in self.records[kind] if after is None or r["endret"] > after]

    def get(self, kind: str, record_id: object) -> dict[str, Any] | None:
        key = {"elev": "elevId", "tiltak": "tiltakId", "samtykke": "id"}[kind]
        return next((r for r in self.records[kind] if r[key] == record_id), None)

    def of_pupil(self, kind: str, elev_id: object) -> list[dict[str, Any]]:
        return [r for r in self.records[kind] if r["elevId"] == elev_id]

    def close(self) -> None:
        pass


def _pupil() -> dict[str, Any]:
    return {
        "elevId": 5501,
        "personnummer": NORA,
        "navn": {"fornavn": "Nora", "etternavn": "Eksempelsen"},
        "trinn": 1,
        "skole": SCHOOL,
        "stafettlogg": {
            "nivaa": 2,
            "kontaktlaerer": {"ansattnr": "L-3", "navn": "Per"},
            "aktiv": True,
            "bekymring": "Overgang",
        },
        "endret": "2026-09-07T09:00:00.001+02:00",
        "endretAv": "bruker",
    }


def _consent(trukket: bool, endret: str, author: str = "bruker") -> dict[str, Any]:
    return {
        "id": 301,
        "elevId": 5501,
        "foresatt": ["04868941214"],
        "signert": "2026-08-17",
        "utloper": "2027-08-16",
        "mottakere": [SCHOOL],
        "trukket": trukket,
        "vedlegg": {"pdf": "JVBERi0xLjQK"},
        "endret": endret,
        "endretAv": author,
    }


def _types(payload: Any) -> list[str]:
    return [e["resource"]["resourceType"] for e in payload["entry"]]


def test_the_source_sends_pupils_first_skips_its_echo_and_withdraws_without_the_log() -> None:
    measure = {
        "tiltakId": 9001,
        "elevId": 5501,
        "tittel": "Fast voksen",
        "beskrivelse": None,
        "ansvarligEnhet": SCHOOL,
        "status": "AKTIV",
        "fra": None,
        "evaluerDato": None,
        "evaluering": None,
        "endret": "2026-09-07T09:00:00.002+02:00",
        "endretAv": "bruker",
    }
    fake = _FakeSchool(
        {
            "elev": [_pupil()],
            "samtykke": [_consent(False, "2026-09-07T09:00:00.003+02:00")],
            "tiltak": [measure, {**measure, "tiltakId": 9002, "endretAv": "stafett"}],
        }
    )
    source = SchoolSource(_config(), fake, LinkState(None))  # type: ignore[arg-type]
    batch = source.poll(None)
    assert [r.record_id for r in batch.records] == ["elev/5501", "samtykke/301", "tiltak/9001"]
    assert _types(batch.records[0].payload)[:5] == [
        "PractitionerRole",
        "Patient",
        "CareTeam",
        "CarePlan",
        "Consent",
    ]
    assert batch.checkpoint == {
        "elev": "2026-09-07T09:00:00.001+02:00",
        "samtykke": "2026-09-07T09:00:00.003+02:00",
        "tiltak": "2026-09-07T09:00:00.002+02:00",
    }
    fake.records["samtykke"] = [_consent(True, "2026-09-08T10:00:00.000+02:00")]
    withdrawn = source.poll(batch.checkpoint)
    assert [r.record_id for r in withdrawn.records] == ["samtykke/301"]
    assert _types(withdrawn.records[0].payload) == ["Patient", "Consent"]
    assert source.poll(withdrawn.checkpoint).records == []
