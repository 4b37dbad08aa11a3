"""Broken records and broken specs fail loudly: system, spec, record id and field path."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mapping import MappingEngine, MappingError, SpecError, load_specs, parse_csv, parse_xml
from mapping.sources import SourceError

GOLDEN = Path(__file__).parent / "golden"


def _case(system: str, name: str) -> dict[str, Any]:
    return dict(json.loads((GOLDEN / system / f"{name}.input.json").read_text(encoding="utf-8")))


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def _with(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(record)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return out


KG_TILTAK = _case("barnehagesystem", "inbound-tiltak")["record"]
KG_BARN = _case("barnehagesystem", "inbound-barn")["record"]
SCHOOL_ELEV = _case("skolesystem", "inbound-elev")["record"]
NAV_TILTAK = _case("nav", "inbound-bti_tiltak")["record"]

# (system, kind, record, context extras, record id, path, words in the message)
INBOUND_CASES = [
    (
        "barnehagesystem",
        "tiltak",
        _without(KG_TILTAK, "beskrivelse"),
        "T-2026-0412",
        "beskrivelse",
        "missing",
    ),
    (
        "barnehagesystem",
        "tiltak",
        _with(KG_TILTAK, "evalueringer", {"dato": "x"}),
        "T-2026-0412",
        "evalueringer",
        "array",
    ),
    (
        "barnehagesystem",
        "tiltak",
        _with(KG_TILTAK, "status", "ferdig"),
        "T-2026-0412",
        "status",
        "'ferdig' is not one of",
    ),
    (
        "barnehagesystem",
        "tiltak",
        _with(KG_TILTAK, "barn", "15832151201"),
        "T-2026-0412",
        "barn",
        "check digit",
    ),
    (
        "barnehagesystem",
        "tiltak",
        _with(KG_TILTAK, "ansvarlig", "912837468"),
        "T-2026-0412",
        "ansvarlig",
        "organisasjonsnummer",
    ),
    (
        "barnehagesystem",
        "tiltak",
        _with(KG_TILTAK, "startdato", "07.09.2026"),
        "T-2026-0412",
        "startdato",
        "not a date",
    ),
    (
        "barnehagesystem",
        "barn",
        _with(KG_BARN, "foresatte.1.foreldreansvar", "besteforeldre"),
        "B-1001",
        "foresatte[1].foreldreansvar",
        "not one of",
    ),
    (
        "barnehagesystem",
        "barn",
        _with(KG_BARN, "logg.niva", 2),
        "B-1001",
        "logg.niva",
        "expected a string",
    ),
    (
        "skolesystem",
        "elev",
        _with(SCHOOL_ELEV, "stafettlogg.nivaa", 4),
        "5501",
        "stafettlogg.nivaa",
        "not one of",
    ),
    (
        "skolesystem",
        "elev",
        _with(SCHOOL_ELEV, "personnummer", "1583215120"),
        "5501",
        "personnummer",
        "11 digits",
    ),
    (
        "nav",
        "bti_tiltak",
        _with(NAV_TILTAK, "status", "UKJENT"),
        "NAV-T-301",
        "status",
        "not one of",
    ),
]


@pytest.mark.parametrize(("system", "kind", "record", "record_id", "path", "words"), INBOUND_CASES)
def test_broken_inbound_record(
    engine: MappingEngine,
    system: str,
    kind: str,
    record: dict[str, Any],
    record_id: str,
    path: str,
    words: str,
) -> None:
    context = {"operator_orgnr": "889640782" if system == "nav" else "936451284"}
    with pytest.raises(MappingError) as caught:
        engine.map(system, "inbound", kind, record, context)
    error = caught.value
    assert (error.system, error.record_id, error.path) == (system, record_id, path)
    assert error.spec
    assert error.spec.endswith(".yaml")
    assert words in error.message
    assert system in str(error)
    assert record_id in str(error)
    assert path in str(error)


def test_missing_context_is_named(engine: MappingEngine) -> None:
    with pytest.raises(MappingError) as caught:
        engine.map("barnehagesystem", "inbound", "tiltak", KG_TILTAK, {})
    assert caught.value.path == "context.operator_orgnr"


def test_school_tiltak_needs_the_child(engine: MappingEngine) -> None:
    record = _case("skolesystem", "inbound-tiltak")["record"]
    with pytest.raises(MappingError) as caught:
        engine.map("skolesystem", "inbound", "tiltak", record, {"operator_orgnr": "936451284"})
    assert (caught.value.record_id, caught.value.path) == ("9001", "elevId")
    assert "context fnr" in caught.value.message


def test_unknown_kind(engine: MappingEngine) -> None:
    with pytest.raises(MappingError, match="no inbound spec for 'mote'"):
        engine.map("barnehagesystem", "inbound", "mote", {}, {"operator_orgnr": "936451284"})


def _task() -> dict[str, Any]:
    return dict(_case("barnehagesystem", "outbound-tiltak")["record"])


def test_outbound_bad_status(engine: MappingEngine) -> None:
    case = _case("barnehagesystem", "outbound-tiltak")
    with pytest.raises(MappingError) as caught:
        engine.map(
            "barnehagesystem",
            "outbound",
            "Task",
            {**case["record"], "status": "draft"},
            case["context"],
        )
    assert (caught.value.record_id, caught.value.path) == ("T-2026-0412", "Task.status")


def test_outbound_unresolvable_child(engine: MappingEngine) -> None:
    case = _case("barnehagesystem", "outbound-tiltak")
    context = {**case["context"], "identifiers": {}}
    with pytest.raises(MappingError) as caught:
        engine.map("barnehagesystem", "outbound", "Task", case["record"], context)
    assert caught.value.path == "Task.for"
    assert "barn" in caught.value.message


def test_outbound_skips_what_does_not_apply(engine: MappingEngine) -> None:
    level_task = json.loads(
        (Path("examples/stafettlogg/task-level.json")).read_text(encoding="utf-8")
    )
    result = engine.map(
        "barnehagesystem", "outbound", "Task", level_task, {"operator_orgnr": "936451284"}
    )
    assert result.is_skipped
    assert result.skipped == ("outbound-tiltak.yaml",)


def test_nav_skips_its_own_echo(engine: MappingEngine) -> None:
    result = engine.map(
        "nav",
        "inbound",
        "bti_tiltak",
        {**NAV_TILTAK, "@kilde": "stafett"},
        {"operator_orgnr": "889640782"},
    )
    assert result.is_skipped


def test_map_many_collects_errors(engine: MappingEngine) -> None:
    records = [KG_TILTAK, _without(KG_TILTAK, "barn"), {**KG_TILTAK, "id": "T-2"}]
    batch = engine.map_many(
        "barnehagesystem", "inbound", "tiltak", records, {"operator_orgnr": "936451284"}
    )
    assert [r.record_id for r in batch.results] == ["T-2026-0412", "T-2"]
    assert [(e.index, e.path) for e in batch.errors] == [(1, "barn")]
    assert batch.errors[0].as_dict()["record_id"] == "T-2026-0412"


def test_invalid_fhir_output_names_the_fhir_path(engine: MappingEngine, tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "inbound-t.yaml").write_text(
        "system: x\ndirection: inbound\nkind: t\nresource: Task\ndescription: test\nrecord_id: id\n"
        'expression: \'{"status": "draft", "intent": "plan", "description": {"a": 1}}\'\n',
        encoding="utf-8",
    )
    broken = MappingEngine.from_directory(tmp_path)
    with pytest.raises(MappingError) as caught:
        broken.map("x", "inbound", "t", {"id": "7"}, {"operator_orgnr": "936451284"})
    assert (caught.value.record_id, caught.value.path) == ("7", "Task.description")


SPEC_OK = (
    "system: x\ndirection: inbound\nkind: t\nresource: Task\ndescription: d\n"
    "record_id: id\nexpression: '{}'\n"
)


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("inbound-t.yaml", "system: [", "not valid YAML"),
        ("inbound-t.yaml", SPEC_OK + "colour: red\n", "unknown keys ['colour']"),
        (
            "inbound-t.yaml",
            SPEC_OK.replace("'{}'", "'{\"a\": }'"),
            "`expression`: JSONata syntax error",
        ),
        (
            "inbound-t.yaml",
            SPEC_OK + "checks:\n  - {expression: 'status = ', message: m}\n",
            "FHIRPath syntax error",
        ),
        ("inbound-t.yaml", SPEC_OK.replace("Task", "Taks"), "not an R4 resource type"),
        ("inbound-other.yaml", SPEC_OK, "file name must be"),
        ("inbound-t.yaml", SPEC_OK + "fields:\n  a: {type: texty}\n", "unknown type 'texty'"),
        ("inbound-t.yaml", SPEC_OK.replace("description: d\n", ""), "`description` must be"),
    ],
)
def test_broken_spec_fails_loudly(tmp_path: Path, name: str, text: str, words: str) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / name).write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path)
    assert caught.value.file == f"x/{name}"
    assert words in caught.value.problem


def test_csv_rows_and_errors() -> None:
    text = "\ufeffa;b\n1;x\n\n2;\n"
    assert parse_csv(text.encode()) == [{"a": "1", "b": "x", "_line": 2}, {"a": "2", "_line": 4}]
    with pytest.raises(SourceError) as caught:
        parse_csv("a;b\n1;2\n3\n", source="tiltak-20260907.csv")
    assert caught.value.location == "line 3"
    assert "tiltak-20260907.csv line 3" in str(caught.value)


def test_xml_to_dict_and_errors() -> None:
    xml = (
        '<elev id="5"><navn><fornavn>Nora</fornavn></navn>'
        "<tiltak>a</tiltak><tiltak>b</tiltak></elev>"
    )
    assert parse_xml(xml) == {
        "elev": {"@id": "5", "navn": {"fornavn": "Nora"}, "tiltak": ["a", "b"]}
    }
    with pytest.raises(SourceError) as caught:
        parse_xml("<elev>\n<navn></elev>", source="elev.xml")
    assert caught.value.location is not None
    assert caught.value.location.startswith("line 2")
    with pytest.raises(SourceError, match="DTD"):
        parse_xml('<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')


def test_mapping_imports_nothing_it_must_not() -> None:
    forbidden = {"service", "connectors", "bus", "consent", "simulators"}
    for path in Path("mapping").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path} imports {name}"
