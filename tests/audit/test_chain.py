"""The tamper-evident audit chain on SQLite and PostgreSQL: raw-SQL tampering, named by verify."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from service.audit import AuditSealer, AuditTrail, redact
from service.audit.chain import checkpoint_message, content_hash, link_hash
from service.audit.keys import key_id
from service.search.extract import ResourceIndexer
from service.search.values import micros_to_instant, now_micros
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.store import SqlStore
from tests.audit.audit_support import BASE_URL, make_record
from tests.audit.chain_support import ChainEnv, problems
from tests.conftest import new_postgres_database

HOUR_US = 3600 * 1_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChainEnv]:
    """Give each test a fresh database: tampering must not leak into the next test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'stafett.db'}"
    else:
        url = new_postgres_database(request.getfixturevalue("postgres_admin_url"))
    db = Database(url)
    upgrade_database(db.engine)
    store = SqlStore(indexer=ResourceIndexer(base_url=BASE_URL))
    trail = AuditTrail(database=db, store=store, server_url=BASE_URL, committers=1)
    key = Ed25519PrivateKey.generate()
    sealer = AuditSealer(database=db, signing_key=key, batch_size=50, checkpoint_every=4)
    yield ChainEnv(db=db, store=store, trail=trail, key=key, sealer=sealer)
    trail.close()
    db.dispose()


def _sealed(env: ChainEnv, count: int = 12) -> list[tuple[int, str]]:
    """Write and seal count AuditEvents in several passes (so there are several checkpoints)."""
    for start in range(0, count, 4):
        env.write(min(4, count - start) - 1)
        env.write_in_transaction(1)
        env.sealer.seal_once()
    chain = env.chain()
    assert len(chain) == count
    return chain


def test_an_untouched_chain_verifies(env: ChainEnv) -> None:
    _sealed(env)
    report = env.verify()
    assert report.ok, report.lines()
    assert (report.entries, report.head_seq, report.checkpoints) == (12, 12, 3)
    assert report.findings == []
    assert report.last_checkpoint_seq == 12


def test_an_edited_row_is_named(env: ChainEnv) -> None:
    chain = _sealed(env)
    seq, rid = chain[4]
    data = env.content(rid)
    data["outcome"] = "8" if data["outcome"] == "0" else "0"  # permitted <-> refused
    doc = orjson.dumps(data).decode()
    # the whole row, as an attacker who knows the store would: current and history
    for table in ("resources", "resource_history"):
        changed = env.execute(
            f"UPDATE {table} SET content = {env.json_param()}"
            " WHERE resource_type = 'AuditEvent' AND id = :id",
            doc=doc,
            id=rid,
        )
        assert changed == 1
    report = env.verify()
    assert not report.ok
    assert problems(report) == [("changed", seq, rid)]
    assert f"AuditEvent/{rid} (seq {seq}) content changed" in report.lines()[1]


def test_an_edited_history_row_alone_is_named(env: ChainEnv) -> None:
    chain = _sealed(env, 4)
    seq, rid = chain[1]
    data = env.content(rid)
    data["agent"][0]["name"] = "Someone Else"
    env.execute(
        f"UPDATE resource_history SET content = {env.json_param()}"
        " WHERE resource_type = 'AuditEvent' AND id = :id",
        doc=orjson.dumps(data).decode(),
        id=rid,
    )
    assert problems(env.verify()) == [("history-changed", seq, rid)]


def test_a_deleted_row_is_named(env: ChainEnv) -> None:
    chain = _sealed(env)
    seq, rid = chain[7]
    for table in ("resources", "resource_history"):
        assert (
            env.execute(
                f"DELETE FROM {table} WHERE resource_type = 'AuditEvent' AND id = :id",
                id=rid,
            )
            == 1
        )
    report = env.verify()
    assert problems(report) == [("deleted", seq, rid)]
    assert f"PROBLEM: seq {seq}: AuditEvent/{rid} deleted" in report.lines()


def _forge(env: ChainEnv, template: str, recorded: int) -> str:
    """Insert an AuditEvent by raw SQL, backdated, as if written long ago."""
    forged = str(uuid.uuid4())
    data = env.content(template)
    data["id"] = forged
    data["meta"]["lastUpdated"] = micros_to_instant(recorded)
    data["recorded"] = micros_to_instant(recorded)
    doc = orjson.dumps(data).decode()
    for table, extra_cols, extra_vals in (
        ("resources", "", ""),
        ("resource_history", ", method", ", 'POST'"),
    ):
        env.execute(
            f"INSERT INTO {table} (resource_type, id, version_id, last_updated, deleted,"
            f" content{extra_cols}) VALUES ('AuditEvent', :id, 1, :lu, false,"
            f" {env.json_param()}{extra_vals})",
            id=forged,
            lu=recorded,
            doc=doc,
        )
    return forged


def test_an_inserted_row_is_named(env: ChainEnv) -> None:
    chain = _sealed(env)
    forged = _forge(env, chain[0][1], now_micros() - 2 * HOUR_US)
    report = env.verify()
    assert problems(report) == [("inserted", None, forged)]
    assert any(
        f"AuditEvent/{forged} not in the chain (inserted?)" in line for line in report.lines()
    )


def test_an_inserted_row_the_sealer_chained_stays_suspect(env: ChainEnv) -> None:
    chain = _sealed(env, 4)
    forged = _forge(env, chain[0][1], now_micros() - 2 * HOUR_US)
    env.sealer.seal_once(sweep=True, force_checkpoint=True)
    report = env.verify()
    assert report.ok  # chained and signed: no longer provably an insertion ...
    # ... but it entered the chain after records written two hours later
    assert [(f.code, f.seq, f.resource_id) for f in report.warnings] == [
        ("out-of-order", 5, forged)
    ]


def test_a_recent_unsealed_row_is_not_a_problem(env: ChainEnv) -> None:
    _sealed(env, 4)
    env.write(2)
    report = env.verify()
    assert report.ok, report.lines()
    assert report.unsealed_recent == 2
    # the same rows past the grace: nobody chained them
    late = env.verify(grace_s=0)
    assert [f.code for f in late.problems] == ["inserted", "inserted"]


def _rewrite_from(env: ChainEnv, chain: list[tuple[int, str]], index: int) -> None:
    """Change an AuditEvent and recompute every hash after it, as an attacker without the key."""
    seq, rid = chain[index]
    data = env.content(rid)
    data["outcome"] = "8" if data["outcome"] == "0" else "0"
    doc = orjson.dumps(data).decode()
    env.execute(
        f"UPDATE resources SET content = {env.json_param()}"
        " WHERE resource_type = 'AuditEvent' AND id = :id",
        doc=doc,
        id=rid,
    )
    env.execute(
        f"UPDATE resource_history SET content = {env.json_param()}"
        " WHERE resource_type = 'AuditEvent' AND id = :id",
        doc=doc,
        id=rid,
    )
    with env.db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT seq, kind, resource_id, recorded_at, sealed_at, content_hash, chain_hash"
                " FROM audit_chain ORDER BY seq"
            )
        ).all()
    prev = bytes(rows[seq - 2][6]) if seq > 1 else bytes(32)
    for row_seq, kind, row_id, recorded_at, sealed_at, stored, _ in rows[seq - 1 :]:
        digest = content_hash(orjson.dumps(env.content(row_id)).decode())
        prev = link_hash(
            prev,
            seq=row_seq,
            kind=kind,
            resource_id=row_id,
            recorded_at=recorded_at,
            sealed_at=sealed_at,
            content=digest if row_id == rid else bytes(stored),
        )
        env.execute(
            "UPDATE audit_chain SET content_hash = :c, chain_hash = :h WHERE seq = :s",
            c=digest if row_id == rid else bytes(stored),
            h=prev,
            s=row_seq,
        )


def test_a_rewritten_chain_without_the_key_is_caught(env: ChainEnv) -> None:
    chain = _sealed(env)  # checkpoints at seq 4, 8 and 12
    _rewrite_from(env, chain, 5)  # seq 6
    report = env.verify()
    # every entry is consistent with its neighbours; only the signatures tell
    assert problems(report) == [("checkpoint-mismatch", 8, None), ("checkpoint-mismatch", 12, None)]
    assert (
        "PROBLEM: checkpoint at seq 8: chain hash mismatch (the chain from seq 5 to seq 8 was "
        in (report.lines()[1])
    )


def test_forged_checkpoints_are_caught(env: ChainEnv) -> None:
    chain = _sealed(env)
    _rewrite_from(env, chain, 5)
    with env.db.read() as conn:
        heads: dict[int, bytes] = dict(
            conn.execute(text("SELECT seq, chain_hash FROM audit_chain WHERE seq IN (8, 12)")).all()
        )
    # the checkpoint at 8 made to match without the key: its signature fails
    env.execute("UPDATE audit_checkpoint SET chain_hash = :h WHERE seq = 8", h=bytes(heads[8]))
    # the one at 12 re-signed with the attacker's own key: an unknown key
    own = Ed25519PrivateKey.generate()
    kid = key_id(own.public_key())
    with env.db.read() as conn:
        signed_at, prev_seq = conn.execute(
            text("SELECT signed_at, prev_seq FROM audit_checkpoint WHERE seq = 12")
        ).one()
    message = checkpoint_message(
        seq=12, prev_seq=prev_seq, chain_hash=bytes(heads[12]), signed_at=signed_at, key=kid
    )
    env.execute(
        "UPDATE audit_checkpoint SET chain_hash = :h, key_id = :k, signature = :s WHERE seq = 12",
        h=bytes(heads[12]),
        k=kid,
        s=own.sign(message),
    )
    report = env.verify()
    assert problems(report) == [
        ("checkpoint-signature", 8, None),
        ("checkpoint-unknown-key", 12, None),
    ]


def test_deleted_chain_entries_and_checkpoints_are_named(env: ChainEnv) -> None:
    chain = _sealed(env)
    env.execute("DELETE FROM audit_chain WHERE seq = 6")
    env.execute("DELETE FROM audit_checkpoint WHERE seq = 8")
    report = env.verify(grace_s=0)
    assert problems(report) == [
        ("entries-missing", 6, None),
        ("checkpoint-missing", 12, None),
        ("inserted", None, chain[5][1]),  # its AuditEvent is now outside the chain
    ]


def test_a_chain_cut_short_is_caught(env: ChainEnv) -> None:
    chain = _sealed(env)
    with env.db.read() as conn:
        head8 = bytes(
            conn.execute(text("SELECT chain_hash FROM audit_chain WHERE seq = 8")).one()[0]
        )
    # the last four records, their entries and their checkpoint gone without a trace in the DB
    for _seq, rid in chain[8:]:
        env.execute("DELETE FROM resources WHERE id = :id", id=rid)
        env.execute("DELETE FROM resource_history WHERE id = :id", id=rid)
    env.execute("DELETE FROM audit_chain WHERE seq > 8")
    # first only the chain: the checkpoint at 12 remains and shows the cut
    report = env.verify()
    assert problems(report) == [("truncated", 12, None)]
    env.execute("DELETE FROM audit_checkpoint WHERE seq > 8")
    assert env.verify().ok  # nothing in the database can tell ...
    # ... but the checkpoint the sealer logged at seq 12 can
    with env.db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_chain")).scalar_one() == 8
    report = env.verify(expect={8: head8, 12: b"\x00" * 32})
    assert problems(report) == [("expected-missing", 12, None)]


def test_redaction_keeps_the_chain_intact(env: ChainEnv) -> None:
    chain = _sealed(env, 8)
    gone = [chain[2][1], chain[3][1]]
    with env.db.write() as conn:
        assert redact(conn, resource_ids=gone, reason="retention ended (barnevernloven)") == 2
        # once is enough: a second call records nothing new
        assert redact(conn, resource_ids=gone[:1], reason="again") == 0
    assert env.content(chain[0][1])  # the others stay
    env.sealer.seal_once(force_checkpoint=True)
    report = env.verify()
    assert report.ok, report.lines()
    assert report.redacted == 2
    assert report.entries == 10  # eight AuditEvents and two redaction records
    # a redaction record removed afterwards is itself a deletion
    event_seq, redaction_seq = (seq for seq, rid in env.chain() if rid == gone[0])
    assert (event_seq, redaction_seq) in ((3, 9), (3, 10))  # redactions follow, in id order
    env.execute("DELETE FROM audit_redaction WHERE resource_id = :id", id=gone[0])
    assert problems(env.verify()) == [
        ("deleted", event_seq, gone[0]),
        ("deleted", redaction_seq, gone[0]),
    ]


def test_redaction_needs_a_reason(env: ChainEnv) -> None:
    with env.db.write() as conn, pytest.raises(ValueError, match="reason"):
        redact(conn, resource_ids=["x"], reason=" ")


@pytest.mark.postgres
def test_a_late_commit_is_sealed(env: ChainEnv) -> None:
    if env.db.is_sqlite:
        pytest.skip("SQLite has one writer: no transaction commits behind the sealer's back")
    _sealed(env, 4)
    started = threading.Event()
    release = threading.Event()

    def slow_write() -> None:
        with env.db.write() as conn:
            env.trail.record_in_transaction(conn, [make_record(patient_id="child-slow")])
            started.set()
            assert release.wait(30)

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert started.wait(30)
    env.write(3)  # newer records commit first
    assert env.sealer.seal_once().sealed == 3
    release.set()
    writer.join()
    # the anti-join finds it although newer records are already chained
    assert env.sealer.seal_once(force_checkpoint=True).sealed == 1
    report = env.verify()
    assert report.ok, report.lines()
    assert report.entries == 8
    assert not report.warnings


def test_sealer_runs_as_a_loop_and_signs_when_it_stops(env: ChainEnv) -> None:
    sealer = AuditSealer(database=env.db, signing_key=env.key, checkpoint_interval_s=3600)
    stop = threading.Event()
    loop = threading.Thread(target=sealer.run, args=(stop, 0.01))
    loop.start()
    try:
        env.write(5)
        deadline = now_micros() + 20_000_000
        while len(env.chain()) < 5:
            assert now_micros() < deadline, "the sealer did not chain the events"
            stop.wait(0.02)
    finally:
        stop.set()
        loop.join(30)
    report = env.verify()
    assert report.ok, report.lines()
    assert report.last_checkpoint_seq == 5


def test_only_one_sealer_leads(env: ChainEnv, tmp_path: Path) -> None:
    if env.db.is_sqlite:
        pytest.skip("SQLite: one process writes at a time anyway")
    from service.audit.chain import SealerLeadership  # noqa: PLC0415

    with SealerLeadership(env.db) as first, SealerLeadership(env.db) as second:
        assert first.held
        assert not second.held


def test_trail_is_unchanged_by_sealing(env: ChainEnv) -> None:
    # the sealer reads; the group committer and transactions write as before, concurrently
    stop = threading.Event()
    loop = threading.Thread(target=env.sealer.run, args=(stop, 0.001))
    loop.start()
    try:
        writers = [threading.Thread(target=env.write, args=(10,)) for _ in range(4)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
    finally:
        stop.set()
        loop.join(30)
    env.sealer.seal_once(sweep=True, force_checkpoint=True)
    report = env.verify()
    assert report.ok, report.lines()
    assert report.entries == 40


def test_a_backlog_is_sealed_in_pages(env: ChainEnv) -> None:
    env.write_in_transaction(120)  # more than two of the sealer's batches of 50
    result = env.sealer.seal_pending()
    assert (result.sealed, result.head_seq, result.checkpoint_seq) == (120, 120, 120)
    report = env.verify()
    assert report.ok, report.lines()
    assert report.entries == 120
