"""Topic names and the organisation-number check of outbound topics."""

from __future__ import annotations

import pytest

from bus import topics


def test_fixed_topic_names() -> None:
    assert topics.INBOUND == "stafett.inbound"
    assert topics.CHANGES == "stafett.changes"
    assert topics.EVENTS == "stafett.events"
    assert topics.DEAD_LETTER == "stafett.dlq"
    assert len(set(topics.ALL_FIXED)) == 5


# Brønnøysundregistrene, Skatteetaten, NAV, a municipality, and the usual test number
@pytest.mark.parametrize("orgnr", ["974760673", "974761076", "889640782", "964338531", "123456785"])
def test_outbound_topic_of_a_valid_orgnr(orgnr: str) -> None:
    assert topics.outbound(orgnr) == f"stafett.out.{orgnr}"
    assert topics.is_outbound(f"stafett.out.{orgnr}") == orgnr


FULL_WIDTH = "974760673".translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})


def _with_check_digit_ten() -> str:
    """Return 8 digits whose mod-11 check digit would be 10, plus a final digit."""
    for n in range(10_000_000, 99_999_999):
        digits = str(n)
        if sum(int(d) * w for d, w in zip(digits, (3, 2, 7, 6, 5, 4, 3, 2), strict=True)) % 11 == 1:
            return digits + "0"
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("orgnr", "problem"),
    [
        ("97476067", "9 digits"),
        ("9747606730", "9 digits"),
        ("97476067a", "9 digits"),
        (FULL_WIDTH, "9 digits"),  # str.isdigit() accepts these
        (" 974760673", "9 digits"),
        ("", "9 digits"),
        ("974760674", "check digit"),
        (_with_check_digit_ten(), "check digit"),
    ],
)
def test_outbound_refuses_an_invalid_orgnr(orgnr: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        topics.outbound(orgnr)
    assert topics.is_outbound(f"stafett.out.{orgnr}") is None


@pytest.mark.parametrize("topic", ["stafett.changes", "stafett.out", "other.out.974760673", ""])
def test_is_outbound_of_other_topics(topic: str) -> None:
    assert topics.is_outbound(topic) is None
