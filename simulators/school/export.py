"""The nightly CSV export of measures: `tiltak-YYYYMMDD.csv`, UTF-8, `;`-separated."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from datetime import date
from pathlib import Path

from simulators.school.system import SchoolSystem

__all__ = ["HEADER", "export_measures"]

HEADER = (
    "tiltak_id",
    "personnummer",
    "tittel",
    "status",
    "fra_dato",
    "evaluer_dato",
    "ansvarlig_enhet",
    "endret",
)


def export_measures(system: SchoolSystem, *, folder: Path, day: date) -> tuple[Path, int]:
    """Write every measure to `folder/tiltak-<day>.csv`; return the file and the row count."""
    pupils = {p["elevId"]: p["personnummer"] for p in system.all_records("elev")}
    measures = system.all_records("tiltak")
    buffer = io.StringIO()
    # RFC 4180: CRLF line ends, quotes only where a field needs them
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(HEADER)
    for m in measures:
        writer.writerow(
            (
                m["tiltakId"],
                pupils.get(m["elevId"], ""),
                m["tittel"],
                m["status"],
                m["fra"] or "",
                m["evaluerDato"] or "",
                m["ansvarligEnhet"],
                m["endret"],
            )
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"tiltak-{day:%Y%m%d}.csv"
    # written beside and renamed, so a folder watcher never reads half a file
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tiltak-", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
    Path(tmp).replace(target)
    return target, len(measures)
