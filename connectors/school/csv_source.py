"""School CSV → Stafett: the nightly `tiltak-YYYYMMDD.csv` export, row by row.

The export is a full dump every night, so a row is sent only when its `endret` is newer than
the version this connector sent before (a map tiltak_id → endret in the checkpoint), and not
when it is the version the school sink wrote (the export has no `endretAv`). A row
carries less than the REST record (no description, no evaluation), so it must not overwrite a
newer REST import: with Stafett read access (`stafett_url`, `stafett_token`) a row is skipped
when Stafett's Task has a `lastModified` at least as new, and otherwise merged into the Task.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.base import DeadRecord, SourceBatch, SourceRecord
from connectors.config import ConnectorConfig
from connectors.provenance import with_provenance
from connectors.school.common import (
    FNR_SYSTEM,
    event_id,
    identifier_value,
    mapping_context,
    mappings,
    newer,
    record_system,
)
from connectors.school.lookup import StafettLookup, reconcile
from connectors.state import LinkState
from mapping import MappingError, SourceError, parse_csv, transaction_bundle

__all__ = ["SchoolCsvSource", "split_broken_rows"]

SYSTEM = "skolesystem"


def split_broken_rows(data: bytes, name: str) -> tuple[bytes, list[DeadRecord]]:
    """Blank the rows whose field count is wrong (keeping line numbers); return them as dead."""
    text = data.decode("utf-8")
    lines = text.splitlines(keepends=True)
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=";")
    header = next(reader, None) or []
    dead: list[DeadRecord] = []
    start = reader.line_num + 1
    for cells in reader:
        end = reader.line_num
        if any(c.strip() for c in cells) and len(cells) != len(header):
            reason = f"{name} line {end}: expected {len(header)} fields, found {len(cells)}"
            dead.append(DeadRecord(f"{name}:line {end}", reason, {"line": end, "cells": cells}))
            for index in range(start - 1, end):
                lines[index] = "\r\n"
        start = end + 1
    return "".join(lines).encode("utf-8"), dead


class SchoolCsvSource:
    """Watches a folder for the export; the checkpoint names each file's version and rows."""

    def __init__(
        self, config: ConnectorConfig, links: LinkState, lookup: StafettLookup | None = None
    ) -> None:
        self._config = config
        self._links = links
        self._folder = Path(str(config.settings["folder"]))
        self._pattern = str(config.settings.get("pattern", "tiltak-*.csv"))
        self._batch = int(config.settings.get("batch_size", 200))
        self._lookup = lookup
        self._logs: dict[str, str | None] = {}  # the school's log per child, for one poll

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        """Return the rows of new or changed files that changed since they were last sent."""
        files: dict[str, Any] = dict((checkpoint or {}).get("files") or {})
        sent: dict[str, str] = dict((checkpoint or {}).get("sent") or {})
        records: list[SourceRecord] = []
        dead: list[DeadRecord] = []
        present = sorted(self._folder.glob(self._pattern)) if self._folder.is_dir() else []
        files = {name: v for name, v in files.items() if name in {p.name for p in present}}
        budget = self._batch
        self._logs = {}
        for path in present:
            stamp = path.stat().st_mtime_ns
            done = files.get(path.name) or {}
            start = int(done.get("rows", 0)) if done.get("mtime_ns") == stamp else 0
            if done.get("mtime_ns") == stamp and start >= int(done.get("total", 0)):
                continue
            rows, broken = self._read(path)
            if start == 0:
                dead += broken
            chunk = rows[start : start + budget]
            budget -= len(chunk)
            for row in chunk:
                self._row(path.name, row, sent, records, dead)
            files[path.name] = {"mtime_ns": stamp, "rows": start + len(chunk), "total": len(rows)}
            if start + len(chunk) < len(rows):
                return SourceBatch(records, dead, {"files": files, "sent": sent}, more=True)
        return SourceBatch(records, dead, {"files": files, "sent": sent})

    def _read(self, path: Path) -> tuple[list[dict[str, Any]], list[DeadRecord]]:
        data = path.read_bytes()
        try:
            return parse_csv(data, source=path.name), []
        except SourceError:
            pass
        try:
            patched, broken = split_broken_rows(data, path.name)
            return parse_csv(patched, source=path.name), broken
        except (SourceError, UnicodeDecodeError, csv.Error) as exc:
            # the file as a whole cannot be read: one dead letter, then it is passed over
            return [], [DeadRecord(path.name, f"{path.name}: {exc}", {"file": path.name})]

    def _row(
        self,
        name: str,
        row: dict[str, Any],
        sent: dict[str, str],
        records: list[SourceRecord],
        dead: list[DeadRecord],
    ) -> None:
        line, tiltak_id = row.get("_line"), str(row.get("tiltak_id") or "")
        changed = row.get("endret")
        if tiltak_id and tiltak_id in sent and not newer(changed, sent[tiltak_id]):
            return  # sent before in this version (the export repeats every measure)
        if changed and self._links.get("echo", tiltak_id) == changed:
            sent[tiltak_id] = str(changed)
            return  # the version the school sink wrote: Stafett has it already
        fnr = str(row.get("personnummer") or "")
        try:
            context = mapping_context(self._config, careplan=self._school_log(fnr))
            result = mappings().map(SYSTEM, "inbound", "tiltak-csv", row, context)
        except MappingError as exc:
            reason = f"{name} line {line}: {exc}"
            dead.append(DeadRecord(f"{name}:line {line}", reason, row, fnr))
            return
        entries = result.entries
        if self._lookup is not None:
            current = self._lookup.matching(entries[0])
            if current is not None and not newer(changed, current.get("lastModified")):
                sent[tiltak_id] = str(changed)
                return  # the REST import is as new or newer, and richer
            entries = tuple(reconcile(entries, self._lookup))
        bundle = with_provenance(
            transaction_bundle(entries),
            unit_orgnr=self._config.organization,
            record_system=record_system(self._config, "tiltak"),
            record_id=tiltak_id,
            display=f"tiltak {tiltak_id} i {name} (eksport fra skolesystemet)",
            occurred=str(changed) if changed else None,
        )
        records.append(
            SourceRecord(
                event_id=event_id(self._config, "csv", tiltak_id, changed),
                subject=fnr,
                payload=bundle,
                record_id=f"{name}:line {line}",
            )
        )
        sent[tiltak_id] = str(changed)

    def _school_log(self, fnr: str) -> str | None:
        """Return the school's own log of the child, when Stafett shows it.

        A row names the pupil only by personnummer; without this the Task is based on "the
        child's active stafettlogg", which is ambiguous when other services keep logs too.
        """
        if self._lookup is None or not fnr:
            return None
        if fnr not in self._logs:
            system = record_system(self._config, "elev")
            found = self._lookup.search(
                "CarePlan", [("subject.identifier", f"{FNR_SYSTEM}|{fnr}"), ("status", "active")]
            )
            ours = [p for p in found if identifier_value(p.get("identifier"), system)]
            self._logs[fnr] = f"CarePlan/{ours[0]['id']}" if len(ours) == 1 else None
        return self._logs[fnr]

    def close(self) -> None:
        """Release the Stafett connection."""
        if self._lookup is not None:
            self._lookup.close()
