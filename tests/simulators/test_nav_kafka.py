"""NAV simulator against a real Kafka-protocol broker: publishing, applying and ignoring events."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from simulators.common.server import running
from simulators.nav import Settings, build_message, create_app, encode

pytestmark = pytest.mark.kafka

FNR = "15832151200"
# docs/ENVIRONMENT.md: with these a group join on Tansu takes ~3 s instead of ~23 s
FAST_GROUP_JOIN = {
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_000,
    "max_poll_interval_ms": 5_000,
    "fetch_max_wait_ms": 10,
}
TILTAK = {
    "tiltaksId": "STAFETT-T-1",
    "fodselsnummer": FNR,
    "beskrivelse": "Arbeidstrening tre dager i uken",
    "status": "GJENNOMFORES",
    "fraOgMed": "2026-09-07",
    "evalueringsdato": "2026-11-30",
    "evaluering": None,
}


def settings_for(
    bootstrap: str, topic: str, data_dir: Path, *, seed_demo: bool = False
) -> Settings:
    """Return NAV settings on a topic of the test's own, with fast group joins."""
    return Settings(
        seed_demo=seed_demo,
        bootstrap=bootstrap,
        data_dir=data_dir,
        topic=topic,
        group_id=f"nav-{topic}",
        **FAST_GROUP_JOIN,
    )


@pytest.fixture(scope="module")
def topic() -> str:
    """Return a topic name that no other test module uses."""
    return f"nav.bti.v1.test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def nav(
    kafka_bootstrap: str, topic: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """Serve NAV's system on the module's topic and yield an HTTP client for it."""
    app = create_app(settings_for(kafka_bootstrap, topic, tmp_path_factory.mktemp("nav")))
    with running(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def produce(kafka_bootstrap: str, topic: str) -> Iterator[Callable[..., None]]:
    """Return a function that publishes raw values to the topic as another system would."""
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(value: bytes | dict[str, Any], key: str = FNR) -> None:
        raw = value if isinstance(value, bytes) else encode(value)
        producer.send(topic, key=key.encode(), value=raw).get(timeout=10)

    yield send
    producer.close(timeout=5)


def store(nav: httpx.Client) -> dict[str, Any]:
    """Return NAV's store."""
    answer: dict[str, Any] = nav.get("/_sim/store").json()
    return answer


def wait_for(nav: httpx.Client, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll NAV's store until `condition` holds for it (the first group join takes ~3 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = store(nav)
        if condition(current):
            return current
        time.sleep(0.05)
    pytest.fail(f"NAV's store never met the condition: {json.dumps(current)[:2000]}")


def handled(event_id: str) -> Callable[[dict[str, Any]], bool]:
    """Return a condition: the event with this @id was applied."""
    return lambda current: event_id in current["behandlet"]


def read_topic(bootstrap: str, topic: str, event_id: str) -> tuple[bytes, dict[str, Any]]:
    """Read the topic from the start (no group) until the event with `event_id` appears."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    value = json.loads(record.value)
                    if value.get("@id") == event_id:
                        return record.key, value
        pytest.fail(f"event {event_id} not on {topic}")
    finally:
        consumer.close()


def test_advisor_action_publishes_a_well_formed_event(
    nav: httpx.Client, kafka_bootstrap: str, topic: str
) -> None:
    answer = nav.post(
        "/_sim/tiltak",
        json={
            "fodselsnummer": FNR,
            "beskrivelse": "Samtale med veileder annenhver uke",
            "fraOgMed": "2026-09-07",
            "evalueringsdato": "2026-11-30",
        },
    )
    assert answer.status_code == 201
    record, event = answer.json()["post"], answer.json()["hendelse"]
    key, published = read_topic(kafka_bootstrap, topic, event["@id"])

    assert published == event
    assert key == FNR.encode()
    assert published["@event_name"] == "bti_tiltak"
    assert uuid.UUID(published["@id"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", published["@opprettet"])
    assert published["@kilde"] == "nav"
    assert {k: v for k, v in published.items() if not k.startswith("@")} == {
        "tiltaksId": record["id"],
        "fodselsnummer": FNR,
        "beskrivelse": "Samtale med veileder annenhver uke",
        "status": "PLANLAGT",
        "fraOgMed": "2026-09-07",
        "evalueringsdato": "2026-11-30",
        "evaluering": None,
    }
    assert record["id"].startswith("NAV-TILTAK-")

    # NAV's own consumer reads its own event and ignores it
    current = wait_for(nav, lambda s: any(i["@id"] == event["@id"] for i in s["sisteIgnorerte"]))
    [ignored] = [i for i in current["sisteIgnorerte"] if i["@id"] == event["@id"]]
    assert ignored["grunn"] == "@kilde is 'nav'"
    assert [r["versjon"] for r in current["tiltak"].values()] == [1]

    changed = nav.post(f"/_sim/tiltak/{record['id']}", json={"status": "GJENNOMFORES"}).json()
    assert (changed["post"]["versjon"], changed["hendelse"]["status"]) == (2, "GJENNOMFORES")
    same = nav.post(f"/_sim/tiltak/{record['id']}", json={"status": "GJENNOMFORES"}).json()
    assert same["hendelse"] is None
    assert nav.post("/_sim/tiltak/NAV-TILTAK-9999", json={}).status_code == 404
    follow_up = nav.post(
        "/_sim/oppfolging",
        json={
            "fodselsnummer": FNR,
            "nivaa": "2",
            "veileder": {"navIdent": "Z990123", "navn": "Vera Veileder"},
        },
    ).json()["hendelse"]
    assert (follow_up["@event_name"], follow_up["kontor"], follow_up["aktiv"]) == (
        "bti_oppfolging",
        "961728398",
        True,
    )


def test_incoming_tiltak_is_applied_once_even_if_delivered_twice(
    nav: httpx.Client, produce: Callable[..., None]
) -> None:
    message = build_message("bti_tiltak", TILTAK, kilde="stafett")
    produce(message)
    produce(message)  # at-least-once delivery: the same event again
    again = build_message("bti_tiltak", TILTAK, kilde="stafett")  # same content, new @id
    produce(again)

    current = wait_for(nav, handled(again["@id"]))
    current = wait_for(nav, lambda s: s["statistikk"]["duplikat"] >= 1)
    [record] = [r for r in current["tiltak"].values() if r["tiltaksId"] == "STAFETT-T-1"]
    assert record["id"].startswith("NAV-TILTAK-")
    assert (record["versjon"], record["endretAv"], record["status"]) == (
        1,
        "stafett",
        "GJENNOMFORES",
    )
    assert current["behandlet"][message["@id"]]["resultat"] == "opprettet"
    assert current["behandlet"][again["@id"]]["resultat"] == "uendret"
    assert current["statistikk"]["duplikat"] == 1

    newer = build_message("bti_tiltak", {**TILTAK, "status": "AVSLUTTET"}, kilde="stafett")
    older = build_message("bti_tiltak", {**TILTAK, "status": "PLANLAGT"}, kilde="stafett")
    older["@opprettet"] = "2026-01-01T00:00:00.000"  # sent long ago, arrives late
    produce(newer)
    produce(older)
    current = wait_for(nav, handled(older["@id"]))
    [record] = [r for r in current["tiltak"].values() if r["tiltaksId"] == "STAFETT-T-1"]
    assert (record["versjon"], record["status"]) == (2, "AVSLUTTET")
    assert current["behandlet"][older["@id"]]["resultat"] == "foreldet"


def test_river_ignores_unknown_events_missing_keys_and_own_events(
    nav: httpx.Client, produce: Callable[..., None]
) -> None:
    before = store(nav)
    unknown = build_message("bti_ukjent", {"fodselsnummer": FNR}, kilde="stafett")
    missing = build_message(
        "bti_samtykke", {"samtykkeId": "STAFETT-S-1", "fodselsnummer": FNR}, kilde="stafett"
    )
    consent = {
        "samtykkeId": "NAV-S-EGEN",
        "fodselsnummer": FNR,
        "mottakere": ["961728398"],
        "gyldigTilOgMed": "2027-11-01",
        "trukket": False,
    }
    own = build_message("bti_samtykke", consent, kilde="nav")
    invalid = build_message(
        "bti_tiltak", {**TILTAK, "fodselsnummer": "12345678901"}, kilde="stafett"
    )
    sentinel = build_message(
        "bti_samtykke", {**consent, "samtykkeId": "STAFETT-S-2"}, kilde="stafett"
    )
    for value in (unknown, missing, own, invalid, b"not json", sentinel):
        produce(value)
    current = wait_for(
        nav, lambda s: any(r["samtykkeId"] == "STAFETT-S-2" for r in s["samtykker"].values())
    )
    reasons = {i["@id"]: i["grunn"] for i in current["sisteIgnorerte"]}
    assert reasons[unknown["@id"]] == "no river for this @event_name"
    assert reasons[missing["@id"]].startswith("missing keys: ['mottakere', 'gyldigTilOgMed'")
    assert reasons[own["@id"]] == "@kilde is 'nav'"
    assert "fodselsnummer" in reasons[invalid["@id"]]
    assert [r["samtykkeId"] for r in current["samtykker"].values()] == ["STAFETT-S-2"]
    stats, old = current["statistikk"], before["statistikk"]
    assert stats["ignorert"] - old["ignorert"] == 3
    assert stats["ugyldig"] - old["ugyldig"] == 2  # the bad fnr and the non-JSON value
    for event_id in (unknown["@id"], missing["@id"], own["@id"], invalid["@id"]):
        assert event_id not in current["behandlet"]


def test_restart_resumes_after_the_committed_offset(
    kafka_bootstrap: str, tmp_path: Path, produce: Callable[..., None]
) -> None:
    topic = f"nav.bti.v1.restart-{uuid.uuid4().hex[:8]}"
    settings = settings_for(kafka_bootstrap, topic, tmp_path, seed_demo=True)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    first = build_message("bti_tiltak", TILTAK, kilde="stafett")
    second = build_message("bti_tiltak", {**TILTAK, "tiltaksId": "STAFETT-T-2"}, kilde="stafett")
    try:
        with running(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as nav:
            producer.send(topic, key=FNR.encode(), value=encode(first)).get(timeout=10)
            wait_for(nav, handled(first["@id"]))
        with running(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as nav:
            producer.send(topic, key=FNR.encode(), value=encode(second)).get(timeout=10)
            current = wait_for(nav, handled(second["@id"]))
    finally:
        producer.close(timeout=5)
    # the store came back from disk, and the first event was not read again
    assert set(current["behandlet"]) == {first["@id"], second["@id"]}
    assert current["statistikk"]["duplikat"] == 0
    assert current["statistikk"]["opprettet"] == 2
    # the demo records were published once, at the first start only
    assert current["statistikk"]["publisert"] == 3
    assert [len(current[c]) for c in ("oppfolging", "tiltak", "samtykker")] == [1, 3, 1]
    assert (tmp_path / "nav.json").exists()
