"""Logs go to the stderr of the moment: a swapped, closed stream loses and raises nothing."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest

from service.logs import configure_logging


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_log_line_follows_stderr_when_it_is_swapped(
    root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(level="INFO")
    logging.getLogger("stafett.test").info("before")
    first.close()  # what pytest's capture does to a test's stream when the test ends
    monkeypatch.setattr(sys, "stderr", second)
    raised: list[BaseException] = []
    monkeypatch.setattr(
        logging.Handler,
        "handleError",
        lambda _self, _record: raised.append(sys.exc_info()[1] or RuntimeError()),
    )
    logging.getLogger("stafett.test").info("after")
    assert raised == []
    line = orjson.loads(second.getvalue().splitlines()[-1])
    assert line["message"] == "after"
    assert line["logger"] == "stafett.test"
