"""Look up a whole batch's conditional searches at once, exactly as each would search alone.

A vendor record arrives as a transaction Bundle whose Task is a conditional update on the
vendor's identifier and whose references are conditional too (the child by fødselsnummer, the
child's log, the service by org.nr). One by one, every message searches each of them: a
statement, its planning and a round trip each, for the most part looking up one identifier.
Before the first message of a batch, the ingest worker hands all of the batch's conditional
searches to `prefetch_conditional`, which finds those of two common forms with a few
statements for the whole batch and keeps their matches in the batch (service/write_batch.py),
where `FhirRepository.find_conditional` finds them, exactly as it would have searched them:

* one token (`identifier=system|code`): `SqlStore.match_tokens`, one statement per type
  and parameter;
* a conjunction of single-valued tokens (`code` or `system|code`) and at most one chain to
  a token on the referenced type (`subject.identifier=system|code`), with a token given with
  its system or the chain to lead: the leading criterion of all of them with one statement
  per form, the other tokens of the candidates with one more, and the candidates' current
  versions with one per type.

Everything else (other parameters, modifiers, several values, _sort...) and criteria that do
not parse are left to `find_conditional`, which searches or refuses them as always. The
semantics follow service/search/sql.py: a token value `system|code` matches index rows with
that system and code, a bare `code` rows with that code whatever the system; a chain matches
references (of the searched parameter, to one of the usable target types) to resources
indexed under the inner token; only live resources are matched. tests/bus_service/
test_prefetch.py holds every form against the search itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from sqlalchemy import Connection, and_, select

from service.errors import BadRequest, FhirError
from service.fhir.spec import SUPPORTED_RESOURCE_TYPES
from service.search.extract import CompiledParam
from service.search.query import SPECIAL_PARAMS, Criterion, SearchQuery, parse_search
from service.storage.schema import search_reference, search_token
from service.storage.store import SqlStore, StoredResource, token_pairs
from service.write_batch import TokenKey, WriteBatch

if TYPE_CHECKING:
    from service.repository import RepositoryConfig

__all__ = ["conditional_query", "prefetch_conditional", "token_key"]

_CHUNK = 500  # values per statement


def conditional_query(
    known: Mapping[str, Mapping[str, CompiledParam]], resource_type: str, criteria: str
) -> SearchQuery:
    """Parse conditional criteria as `find_conditional` searches them (strict, 2 at most)."""
    pairs = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if not pairs:
        raise BadRequest("If-None-Exist must carry search criteria, e.g. identifier=sys|val")
    query = parse_search(
        resource_type, pairs, known=known, default_count=2, max_count=2, strict=True
    )
    query.count = 2
    return query


def token_key(query: SearchQuery, criteria: str) -> TokenKey | None:
    """Return (param, system, code) when the search is `param=system|code` and nothing else."""
    if "&" in criteria or len(query.criteria) != 1 or not _plain_page(query):
        return None
    term = _token_term(query.criteria[0])
    if term is None or term.system is None:
        return None
    return term.param, term.system, term.code


def prefetch_conditional(
    config: RepositoryConfig, batch: WriteBatch, searches: Iterable[tuple[str, str]]
) -> None:
    """Find the batch's conditional searches of the forms above and keep them in the batch.

    `searches` are (type, criteria) as the batch's messages will search them; call before
    the batch writes anything. Returns nothing: what is found is in the batch.
    """
    known = config.search_params()
    tokens: dict[tuple[str, str], TokenKey] = {}
    conjunctions: dict[tuple[str, str], _Conjunction] = {}
    for resource_type, criteria in searches:
        key = (resource_type, criteria)
        if key in tokens or key in conjunctions or batch.knows(resource_type, criteria):
            continue
        if resource_type not in SUPPORTED_RESOURCE_TYPES:
            continue
        try:
            query = conditional_query(known, resource_type, criteria)
        except FhirError:
            continue
        token = token_key(query, criteria)
        if token is not None:
            tokens[key] = token
            continue
        conjunction = _conjunction(query)
        if conjunction is not None:
            conjunctions[key] = conjunction
    store, conn = config.store, batch.conn
    by_param: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for (resource_type, _criteria), (param, system, code) in tokens.items():
        by_param.setdefault((resource_type, param), set()).add((system, code))
    found: dict[tuple[str, str, str, str], list[StoredResource]] = {}
    for (resource_type, param), pairs in by_param.items():
        for (system, code), matches in store.match_tokens(
            conn, resource_type, param, sorted(pairs)
        ).items():
            found[(resource_type, param, system, code)] = matches
    for (resource_type, criteria), token in tokens.items():
        matches = found.get((resource_type, *token), [])
        batch.remember_matches(resource_type, criteria, matches[:2], {resource_type}, token=token)
    if conjunctions:
        for (resource_type, criteria), matches in _match_conjunctions(
            conn, store, conjunctions
        ).items():
            conjunction = conjunctions[(resource_type, criteria)]
            batch.remember_matches(resource_type, criteria, matches[:2], conjunction.depends_on)


# -- conjunctions -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Token:
    """`param=code` (any system; `system` None) or `param=system|code` on the searched type."""

    param: str
    system: str | None
    code: str

    def matches(self, system: str | None, code: str | None) -> bool:
        return code == self.code and (self.system is None or system == self.system)


@dataclass(frozen=True, slots=True)
class _Chain:
    """`param.inner=system|code`: a reference to a target indexed under the inner token."""

    param: str
    targets: tuple[str, ...]
    inner: _Token


@dataclass(frozen=True, slots=True)
class _Conjunction:
    resource_type: str
    lead: _Token | _Chain
    others: tuple[_Token, ...]
    depends_on: frozenset[str]


def _plain_page(query: SearchQuery) -> bool:
    # the first page, sorted as any conditional search is, nothing included
    return not (query.sort or query.offset or query.includes or query.revincludes)


def _token_term(criterion: Criterion) -> _Token | None:
    if (
        criterion.type != "token"
        or criterion.code in SPECIAL_PARAMS
        or criterion.modifier is not None
        or criterion.chain is not None
        or len(criterion.values) != 1
    ):
        return None
    value = criterion.values[0]
    if "|" not in value:
        return _Token(criterion.code, None, value) if value else None
    # as service/search/sql.py reads a token value: system|code, both given
    system, _, code = value.partition("|")
    if not system or not code:
        return None
    return _Token(criterion.code, system, code)


def _conjunction(query: SearchQuery) -> _Conjunction | None:
    if not query.criteria or not _plain_page(query):
        return None
    chains: list[_Chain] = []
    tokens: list[_Token] = []
    depends_on = {query.resource_type}
    for criterion in query.criteria:
        if criterion.chain is not None:
            inner = _token_term(criterion.chain)
            if (
                criterion.type != "reference"
                or criterion.modifier is not None
                or not criterion.chain_targets
                or inner is None
                or inner.system is None
            ):
                return None
            chains.append(_Chain(criterion.code, criterion.chain_targets, inner))
            depends_on.update(criterion.chain_targets)
            continue
        token = _token_term(criterion)
        if token is None:
            return None
        tokens.append(token)
    if len(chains) > 1:
        return None
    lead: _Token | _Chain
    if chains:
        lead = chains[0]
    else:
        with_system = [t for t in tokens if t.system is not None]
        if not with_system:
            return None  # every candidate would be every resource with that code
        lead = with_system[0]
        tokens.remove(lead)
    return _Conjunction(query.resource_type, lead, tuple(tokens), frozenset(depends_on))


def _match_conjunctions(
    conn: Connection, store: SqlStore, conjunctions: Mapping[tuple[str, str], _Conjunction]
) -> dict[tuple[str, str], list[StoredResource]]:
    """Return each conjunction's matches, newest first (then by id), as a search page sorts."""
    # 1. the candidates: resources meeting the lead criterion, one statement per form
    leads = {key: _lead_key(conjunction) for key, conjunction in conjunctions.items()}
    by_form: dict[tuple[object, ...], set[tuple[str, str]]] = {}
    for form, pair in leads.values():
        by_form.setdefault(form, set()).add(pair)
    hits: dict[tuple[tuple[object, ...], tuple[str, str]], set[str]] = {}
    for form, pairs in by_form.items():
        for system, code, resource_id in _lead_rows(conn, form, sorted(pairs)):
            hits.setdefault((form, (system, code)), set()).add(resource_id)
    candidates = {key: set(hits.get(lead, ())) for key, lead in leads.items()}
    # 2. the other criteria, on the candidates' token rows
    rows_wanted: dict[str, tuple[set[str], set[str]]] = {}
    for key, conjunction in conjunctions.items():
        if conjunction.others and candidates[key]:
            ids, params = rows_wanted.setdefault(conjunction.resource_type, (set(), set()))
            ids |= candidates[key]
            params |= {token.param for token in conjunction.others}
    token_rows: dict[tuple[str, str], list[tuple[str, str | None, str | None]]] = {}
    for resource_type, (ids, params) in rows_wanted.items():
        for resource_id, param, row_system, row_code in _token_rows(
            conn, resource_type, sorted(ids), sorted(params)
        ):
            token_rows.setdefault((resource_type, resource_id), []).append(
                (param, row_system, row_code)
            )
    for key, conjunction in conjunctions.items():
        if conjunction.others:
            candidates[key] = {
                resource_id
                for resource_id in candidates[key]
                if all(
                    any(
                        param == token.param and token.matches(system, code)
                        for param, system, code in token_rows.get(
                            (conjunction.resource_type, resource_id), ()
                        )
                    )
                    for token in conjunction.others
                )
            }
    # 3. their current versions (live only)
    keys = sorted({(key[0], resource_id) for key in candidates for resource_id in candidates[key]})
    current = {(s.resource_type, s.id): s for s in store.read_many(conn, keys)}
    out: dict[tuple[str, str], list[StoredResource]] = {}
    for key, ids in candidates.items():
        matches = [current[(key[0], i)] for i in ids if (key[0], i) in current]
        matches.sort(key=lambda m: (-m.last_updated, m.id))
        out[key] = matches
    return out


def _lead_key(conjunction: _Conjunction) -> tuple[tuple[object, ...], tuple[str, str]]:
    """Return the lead criterion's form (one statement each) and (system, code), bare: ""."""
    lead = conjunction.lead
    if isinstance(lead, _Chain):
        form = ("chain", conjunction.resource_type, lead.param, lead.targets, lead.inner.param)
        return form, (lead.inner.system or "", lead.inner.code)
    return ("token", conjunction.resource_type, lead.param), (lead.system or "", lead.code)


def _lead_rows(
    conn: Connection, form: tuple[object, ...], pairs: Sequence[tuple[str, str]]
) -> Iterable[tuple[str, str, str]]:
    """Yield (system, code, id) of the resources meeting a lead criterion of one form."""
    # a bare code (no system) is carried as system "" and matched on the code alone
    with_system = [(s, c) for s, c in pairs if s]
    bare = sorted({c for s, c in pairs if not s})
    for start in range(0, max(len(with_system), len(bare)), _CHUNK):
        part, codes = with_system[start : start + _CHUNK], bare[start : start + _CHUNK]
        if form[0] == "chain":
            _kind, resource_type, param, targets, inner = form
            assert isinstance(targets, tuple)
            stmt = (
                select(search_token.c.system, search_token.c.code, search_reference.c.resource_id)
                .join(
                    search_reference,
                    and_(
                        search_reference.c.target_type == search_token.c.resource_type,
                        search_reference.c.target_id == search_token.c.resource_id,
                    ),
                )
                .where(
                    search_reference.c.resource_type == resource_type,
                    search_reference.c.param == param,
                    search_reference.c.target_type.in_(targets),
                    search_token.c.resource_type.in_(targets),
                    search_token.c.param == inner,
                )
            )
        else:
            _kind, resource_type, param = form
            stmt = select(
                search_token.c.system, search_token.c.code, search_token.c.resource_id
            ).where(search_token.c.resource_type == resource_type, search_token.c.param == param)
        if part:
            for system, code, resource_id in conn.execute(stmt.where(*token_pairs(part))):
                yield system, code, resource_id
        if codes:
            for _system, code, resource_id in conn.execute(
                stmt.where(search_token.c.code.in_(codes))
            ):
                yield "", code, resource_id


def _token_rows(
    conn: Connection, resource_type: str, ids: Sequence[str], params: Sequence[str]
) -> Iterable[tuple[str, str, str | None, str | None]]:
    """Yield (id, param, system, code) of these resources' token rows for these parameters."""
    for start in range(0, len(ids), _CHUNK):
        stmt = select(
            search_token.c.resource_id,
            search_token.c.param,
            search_token.c.system,
            search_token.c.code,
        ).where(
            search_token.c.resource_type == resource_type,
            search_token.c.resource_id.in_(ids[start : start + _CHUNK]),
            search_token.c.param.in_(params),
        )
        for row in conn.execute(stmt):
            yield row[0], row[1], row[2], row[3]
