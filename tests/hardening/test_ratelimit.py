"""Rate limits: a token bucket per principal (per IP without a token), 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service.api.ratelimit import RateLimiter, TokenBucket
from service.config import Settings
from tests.hardening.conftest import outcome_codes
from tests.support import LiveServer, live_server, synthetic_orgnr


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, tokens=3, updated=0)
    assert [bucket.take(0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0  # one token came back in half a second at 2/s
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(100) == 0
    assert bucket.tokens == pytest.approx(2)  # refilled to the burst, never beyond


def test_limiter_keeps_callers_apart_and_forgets_the_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        rate=1, burst=2, anonymous_rate=1, anonymous_burst=1, max_keys=3, clock=clock
    )
    assert limiter.check("p:a", authenticated=True) == 0
    assert limiter.check("p:a", authenticated=True) == 0
    assert limiter.check("p:a", authenticated=True) == pytest.approx(1)
    assert limiter.check("p:b", authenticated=True) == 0  # another principal has its own
    assert limiter.check("ip:1", authenticated=False) == 0
    assert limiter.check("ip:1", authenticated=False) == pytest.approx(1)  # smaller burst
    assert len(limiter) == 3
    limiter.check("ip:2", authenticated=False)  # the least recently seen (p:a) goes
    assert len(limiter) == 3
    assert limiter.check("p:a", authenticated=True) == 0  # forgotten means a full bucket


def test_defaults_are_generous_and_on() -> None:
    settings = Settings()
    assert settings.rate_limit
    assert settings.rate_limit_per_second >= 50
    assert settings.rate_limit_burst >= 300


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Run Stafett with tiny rate limits: 0.5/s after 3 at once; 0.5/s after 2 without token."""
    data_dir = tmp_path_factory.mktemp("data")
    with live_server(
        database_url=f"sqlite:///{data_dir / 'stafett.db'}",
        data_dir=data_dir,
        access_policy="scopes-only",
        rate_limit=True,
        rate_limit_per_second=0.5,
        rate_limit_burst=3,
        rate_limit_anonymous_per_second=0.5,
        rate_limit_anonymous_burst=2,
    ) as live:
        yield live


def test_a_principal_is_throttled_with_retry_after(throttled: LiveServer) -> None:
    org = synthetic_orgnr()
    with throttled.client(throttled.system_token(org=org)) as client:
        assert [client.get("/Patient").status_code for _ in range(3)] == [200, 200, 200]
        response = client.get("/Patient")
    assert response.status_code == 429
    assert outcome_codes(response) == ["throttled"]
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert 1 <= int(response.headers["retry-after"]) <= 2
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "x-request-id" in response.headers
    # a new token of the same principal shares the bucket: the limit is per principal
    with throttled.client(throttled.system_token(org=org)) as client:
        assert client.get("/Patient").status_code == 429
    # another principal is not affected
    with throttled.client(throttled.system_token(org=synthetic_orgnr())) as client:
        assert client.get("/Patient").status_code == 200


def test_page_sessions_count_as_their_principal(throttled: LiveServer) -> None:
    token = throttled.system_token(org=synthetic_orgnr())
    cookies = {"stafett_okt": token}
    statuses = [
        httpx.get(throttled.base_url + "/familie/", cookies=cookies).status_code for _ in range(4)
    ]
    assert statuses[-1] == 429
    assert 429 not in statuses[:3]
    with throttled.client(token) as client:  # the same principal through the API
        assert client.get("/Patient").status_code == 429


def test_without_a_valid_token_the_address_is_throttled(throttled: LiveServer) -> None:
    # 127.0.0.1 is every test's address: use one test for the anonymous bucket
    statuses = [httpx.get(throttled.fhir + "/metadata").status_code for _ in range(2)]
    assert statuses == [200, 200]
    assert httpx.get(throttled.fhir + "/metadata").status_code == 429
    bad = httpx.get(throttled.fhir + "/Patient", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 429  # an invalid token does not buy a bucket of its own
    # health checks and metrics are never throttled
    for _ in range(10):
        assert httpx.get(throttled.base_url + "/healthz").status_code == 200
        assert httpx.get(throttled.base_url + "/readyz").status_code == 200
        assert httpx.get(throttled.base_url + "/metrics").status_code == 200


def test_off_switch(limited_server: LiveServer) -> None:
    # limited_server runs with rate_limit=False (tests.support.live_server's default)
    assert not limited_server.settings.rate_limit
    statuses = {httpx.get(limited_server.fhir + "/metadata").status_code for _ in range(100)}
    assert statuses == {200}
