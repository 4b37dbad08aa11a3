"""Parse CSV and XML sources into dicts, so they are mapped like JSON records.

Errors name the line (CSV) or element path and line (XML) of the problem.
"""

from __future__ import annotations

import csv
import io
from typing import Any
from xml.etree import ElementTree as ET

from mapping.errors import MappingProblem

__all__ = ["SourceError", "parse_csv", "parse_xml"]


class SourceError(MappingProblem, ValueError):
    """A source file cannot be parsed; `location` says where (`line 4`, `line 3, column 7`)."""

    def __init__(self, message: str, *, source: str, location: str | None = None) -> None:
        self.source = source
        self.location = location
        self.message = message
        where = f"{source} {location}" if location else source
        super().__init__(f"{where}: {message}")


def _text(data: bytes | str) -> str:
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return data.removeprefix("\ufeff")


def parse_csv(
    data: bytes | str, *, delimiter: str = ";", source: str = "csv"
) -> list[dict[str, Any]]:
    """Parse a header-row CSV (UTF-8, optional BOM) to one dict per row, with `_line` set.

    Empty cells become absent fields, so a spec's `required` rules see them as missing.
    """
    try:
        text = _text(data)
    except UnicodeDecodeError as exc:
        raise SourceError(f"not UTF-8: {exc}", source=source) from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[dict[str, Any]] = []
    try:
        header = next(reader, None)
        if not header:
            raise SourceError("the file is empty (no header row)", source=source)
        names = [name.strip() for name in header]
        if any(not name for name in names) or len(set(names)) != len(names):
            raise SourceError(
                f"the header row has empty or repeated names: {names}",
                source=source,
                location="line 1",
            )
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(names):
                raise SourceError(
                    f"expected {len(names)} fields ({delimiter!r}-separated), found {len(cells)}",
                    source=source,
                    location=f"line {line}",
                )
            row: dict[str, Any] = {
                n: c.strip() for n, c in zip(names, cells, strict=True) if c.strip()
            }
            row["_line"] = line
            rows.append(row)
    except csv.Error as exc:
        raise SourceError(str(exc), source=source, location=f"line {reader.line_num}") from exc
    return rows


def _element(node: ET.Element) -> Any:
    children = list(node)
    attributes = {f"@{k}": v for k, v in node.attrib.items()}
    text = (node.text or "").strip()
    if not children and not attributes:
        return text or None
    out: dict[str, Any] = dict(attributes)
    for child in children:
        tag = child.tag.rsplit("}", 1)[-1]
        value = _element(child)
        if tag in out:
            existing = out[tag]
            out[tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[tag] = value
    if text:
        out["#text"] = text
    return out


def parse_xml(data: bytes | str, *, source: str = "xml") -> dict[str, Any]:
    """Parse XML to a dict: elements → keys (repeated → arrays), attributes → `@name`.

    Namespaces are dropped from tag names; text of mixed elements is `#text`. DTDs (and so
    entity expansion) are refused.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise SourceError("DTDs and entities are not accepted", source=source)
    try:
        root = ET.fromstring(raw)  # noqa: S314 - DTDs refused above
    except ET.ParseError as exc:
        line, column = exc.position
        raise SourceError(
            str(exc), source=source, location=f"line {line}, column {column + 1}"
        ) from exc
    tag = root.tag.rsplit("}", 1)[-1]
    return {tag: _element(root)}
