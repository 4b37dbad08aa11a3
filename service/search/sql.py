"""Turn a SearchQuery into indexed SQL over the resources and search-index tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
)

from service.errors import BadRequest
from service.search.extract import parse_reference
from service.search.query import DATE_PREFIXES, SPECIAL_PARAMS, Criterion, SearchQuery
from service.search.values import InvalidDate, normalise_string, parse_date_range
from service.storage.schema import (
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
)

__all__ = ["count_statement", "criteria_clause", "page_statement"]


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _ids_matching(table: Any, resource_type: str, code: str, condition: ColumnElement[bool]) -> Any:
    """Select ids of resources of a type with an index row for code that meets condition."""
    return select(table.c.resource_id).where(
        table.c.resource_type == resource_type, table.c.param == code, condition
    )


_TABLE_BY_TYPE = {
    "token": search_token,
    "uri": search_token,
    "string": search_string,
    "date": search_date,
    "reference": search_reference,
}


def _token_condition(value: str, modifier: str | None) -> ColumnElement[bool]:
    if "|" not in value:
        return search_token.c.code == value
    system, _, code = value.partition("|")
    if system == "":
        return and_(search_token.c.system.is_(None), search_token.c.code == code)
    if code == "":
        return search_token.c.system == system
    return and_(search_token.c.system == system, search_token.c.code == code)


def _uri_condition(value: str, modifier: str | None) -> ColumnElement[bool]:
    if modifier == "below":
        return search_token.c.code.like(_escape_like(value) + "%", escape="\\")
    if modifier == "above":
        # the stored uri is a prefix of (or equal to) the searched one
        return literal(value).like(func.replace(search_token.c.code, "%", "\\%") + "%")
    return search_token.c.code == value


def _string_condition(value: str, modifier: str | None) -> ColumnElement[bool]:
    if modifier == "exact":
        return search_string.c.value_exact == value
    normalised = _escape_like(normalise_string(value))
    if modifier == "contains":
        return search_string.c.value_normalized.like("%" + normalised + "%", escape="\\")
    return search_string.c.value_normalized.like(normalised + "%", escape="\\")


def date_condition(
    value: str, low_col: ColumnElement[int], high_col: ColumnElement[int]
) -> ColumnElement[bool]:
    """Match stored ranges [low_col, high_col] against a prefixed FHIR date search value."""
    prefix = "eq"
    if value[:2] in DATE_PREFIXES:
        prefix, value = value[:2], value[2:]
    try:
        low, high = parse_date_range(value)
    except InvalidDate as exc:
        raise BadRequest(str(exc)) from exc
    contained = and_(low_col >= low, high_col <= high)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return high_col > high
    if prefix == "lt":
        return low_col < low
    if prefix == "ge":
        return or_(high_col > high, contained)
    if prefix == "le":
        return or_(low_col < low, contained)
    if prefix == "sa":
        return low_col > high
    if prefix == "eb":
        return high_col < low
    # ap: the ranges overlap once the search range is widened by 10 % of its distance from now
    slack = max(high - low, 86_400_000_000) // 10
    return and_(low_col <= high + slack, high_col >= low - slack)


def _reference_condition(value: str, criterion: Criterion, base_url: str) -> ColumnElement[bool]:
    target_type, target_id, url = parse_reference(value, base_url)
    if "/" not in value and ":" not in value:
        # a bare id: any allowed target type (or the :Type modifier)
        if criterion.target_type:
            return and_(
                search_reference.c.target_type == criterion.target_type,
                search_reference.c.target_id == value,
            )
        return search_reference.c.target_id == value
    if url is not None and target_type is None:
        return search_reference.c.target_url == url
    if criterion.target_type and target_type != criterion.target_type:
        return false()
    return and_(
        search_reference.c.target_type == target_type, search_reference.c.target_id == target_id
    )


def _value_condition(criterion: Criterion, value: str, base_url: str) -> ColumnElement[bool]:
    kind = criterion.type
    if kind == "token":
        return _token_condition(value, criterion.modifier)
    if kind == "uri":
        return _uri_condition(value, criterion.modifier)
    if kind == "string":
        return _string_condition(value, criterion.modifier)
    if kind == "date":
        return date_condition(value, search_date.c.low, search_date.c.high)
    if kind == "reference":
        return _reference_condition(value, criterion, base_url)
    raise BadRequest(f"Search parameter type '{kind}' is not supported")


def _special_condition(
    resource_type: str,
    criterion: Criterion,
    id_col: ColumnElement[str],
    updated_col: ColumnElement[int],
) -> ColumnElement[bool]:
    if criterion.code == "_id":
        if criterion.modifier == "missing":
            return false() if criterion.values[0] == "true" else true()
        by_id: ColumnElement[bool] = id_col.in_(criterion.values)
        return not_(by_id) if criterion.modifier == "not" else by_id
    # _lastUpdated: a stored instant is the one-point range [t, t]
    if criterion.modifier == "missing":
        return false() if criterion.values[0] == "true" else true()
    matched = or_(*(date_condition(v, updated_col, updated_col) for v in criterion.values))
    return not_(matched) if criterion.modifier == "not" else matched


def criteria_clause(
    resource_type: str,
    criterion: Criterion,
    *,
    base_url: str,
    id_col: ColumnElement[str] | None = None,
    updated_col: ColumnElement[int] | None = None,
) -> ColumnElement[bool]:
    """Return a boolean SQL clause selecting resources (by id column) matching one criterion."""
    id_col = resources.c.id if id_col is None else id_col
    updated_col = resources.c.last_updated if updated_col is None else updated_col
    assert id_col is not None
    assert updated_col is not None
    if criterion.code in ("_id", "_lastUpdated"):
        return _special_condition(resource_type, criterion, id_col, updated_col)
    table = _TABLE_BY_TYPE[criterion.type]
    if criterion.chain is not None:
        return _chain_clause(resource_type, criterion, base_url=base_url, id_col=id_col)
    if criterion.modifier == "missing":
        present = id_col.in_(
            select(table.c.resource_id).where(
                table.c.resource_type == resource_type, table.c.param == criterion.code
            )
        )
        return not_(present) if criterion.values[0] == "true" else present
    if criterion.type == "reference" and criterion.modifier == "identifier":
        conditions = [_token_condition(v, None) for v in criterion.values]
        return id_col.in_(
            _ids_matching(
                search_token, resource_type, criterion.code + ":identifier", or_(*conditions)
            )
        )
    conditions = [_value_condition(criterion, v, base_url) for v in criterion.values]
    matched = id_col.in_(_ids_matching(table, resource_type, criterion.code, or_(*conditions)))
    # :not on a token also matches resources without the element (FHIR R4 search 3.1.1.5.5)
    return not_(matched) if criterion.modifier == "not" else matched


def _chain_clause(
    resource_type: str, criterion: Criterion, *, base_url: str, id_col: ColumnElement[str]
) -> ColumnElement[bool]:
    assert criterion.chain is not None
    inner = criterion.chain
    targets = criterion.chain_targets
    target_pairs: Any
    if inner.code == "_id" and inner.modifier is None:
        target_pairs = and_(
            search_reference.c.target_type.in_(targets),
            search_reference.c.target_id.in_(inner.values),
        )
    elif inner.code not in SPECIAL_PARAMS and inner.modifier in (
        None,
        "exact",
        "contains",
        "below",
    ):
        # Index rows exist only for live resources, so the target's index table alone says
        # which (type, id) pairs match: one row-value IN that the planner drives from the
        # (usually tiny) set of targets instead of scanning the source type.
        table = _TABLE_BY_TYPE[inner.type]
        conditions = [_value_condition(inner, value, base_url) for value in inner.values]
        matching_targets = select(table.c.resource_type, table.c.resource_id).where(
            table.c.resource_type.in_(targets), table.c.param == inner.code, or_(*conditions)
        )
        target_pairs = tuple_(search_reference.c.target_type, search_reference.c.target_id).in_(
            matching_targets
        )
    else:
        per_target = []
        for target in targets:
            clause = criteria_clause(target, inner, base_url=base_url)
            target_ids = select(resources.c.id).where(
                resources.c.resource_type == target, resources.c.deleted.is_(False), clause
            )
            per_target.append(
                and_(
                    search_reference.c.target_type == target,
                    search_reference.c.target_id.in_(target_ids),
                )
            )
        target_pairs = or_(*per_target)
    return id_col.in_(_ids_matching(search_reference, resource_type, criterion.code, target_pairs))


def _where(query: SearchQuery, base_url: str, extra: ColumnElement[bool] | None) -> list[Any]:
    clauses: list[Any] = [
        resources.c.resource_type == query.resource_type,
        resources.c.deleted.is_(False),
    ]
    clauses.extend(
        criteria_clause(query.resource_type, c, base_url=base_url) for c in query.criteria
    )
    if extra is not None:
        clauses.append(extra)
    return clauses


def count_statement(
    query: SearchQuery, *, base_url: str, extra: ColumnElement[bool] | None = None
) -> Select[Any]:
    """Return SELECT count(*) of the matches."""
    return select(func.count()).select_from(resources).where(*_where(query, base_url, extra))


def _sort_key(code: str, descending: bool, kind: str) -> Any:
    if code == "_id":
        return resources.c.id
    if code == "_lastUpdated":
        return resources.c.last_updated
    table, column = _sort_columns(descending)[kind]
    aggregate = func.max(column) if descending else func.min(column)
    return (
        select(aggregate)
        .where(
            table.c.resource_type == resources.c.resource_type,
            table.c.resource_id == resources.c.id,
            table.c.param == code,
        )
        .scalar_subquery()
    )


def _sort_columns(descending: bool) -> dict[str, tuple[Any, Any]]:
    return {
        "token": (search_token, search_token.c.code),
        "uri": (search_token, search_token.c.code),
        "string": (search_string, search_string.c.value_normalized),
        "date": (search_date, search_date.c.high if descending else search_date.c.low),
        "reference": (search_reference, search_reference.c.target_id),
    }


def page_statement(
    query: SearchQuery,
    *,
    base_url: str,
    extra: ColumnElement[bool] | None = None,
    with_total: bool = False,
) -> Select[Any]:
    """Return the SELECT of one page of matches, sorted and limited.

    A deferred join: the inner query finds, sorts and limits the page using the index tables
    and the narrow covering index of `resources`; only then are the page's JSON rows read.
    With `with_total`, every row also carries the number of all matches (a window count,
    computed in the same pass that sorts them, instead of a second query).
    """
    keys: list[Any] = []
    directions: list[bool] = []
    for index, (code, descending, kind) in enumerate(query.sort):
        keys.append(_sort_key(code, descending, kind).label(f"sort_{index}"))
        directions.append(descending)
    if not query.sort:
        keys.append(resources.c.last_updated.label("sort_default"))
        directions.append(True)
    inner_order: list[Any] = []
    for key, descending in zip(keys, directions, strict=True):
        # missing values sort last whichever the direction (both databases agree on this form)
        inner_order.append(key.is_(None))
        inner_order.append(key.desc() if descending else key.asc())
    inner_order.append(resources.c.id)
    counted = [func.count().over().label("total")] if with_total else []
    page = (
        select(resources.c.id.label("page_id"), *keys, *counted)
        .where(*_where(query, base_url, extra))
        .order_by(*inner_order)
        .limit(query.count)
        .offset(query.offset)
        .subquery("page")
    )
    outer_order: list[Any] = []
    for key, descending in zip(keys, directions, strict=True):
        column = page.c[key.name]
        outer_order.append(column.is_(None))
        outer_order.append(column.desc() if descending else column.asc())
    outer_order.append(page.c.page_id)
    return (
        select(
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
            resources.c.deleted,
            resources.c.content,
            resources.c.sealed,
            *([page.c.total] if with_total else []),
        )
        .join(
            page,
            and_(
                resources.c.resource_type == query.resource_type,
                resources.c.id == page.c.page_id,
            ),
        )
        .order_by(*outer_order)
    )
