"""Rows stored in clear (before migration 0007, or with encryption off) are encrypted online."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from service.crypto.cli import run_keys
from tests.storage_crypto.support import leaks, marked_log, table_texts
from tests.support import fhir_headers, live_server, synthetic_orgnr

pytestmark = pytest.mark.e2e


# the refused server's thread ends with SystemExit, which pytest reports as a warning
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_rotate_encrypts_existing_plaintext(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir: Path = tmp_path_factory.mktemp("data")
    with live_server(
        database_url=database_url,
        data_dir=data_dir,
        access_policy="scopes-only",
        encryption_at_rest=False,
    ) as clear:
        api = clear.client(clear.practitioner_token(org=synthetic_orgnr()))
        posted = api.post("", json=marked_log("OLD"), headers=fhir_headers())
        assert posted.status_code == 200, posted.text
        plan_url = next(
            e["response"]["location"].rsplit("/_history", 1)[0]
            for e in posted.json()["entry"]
            if e["response"]["location"].startswith("CarePlan/")
        )
        settings = clear.settings
    dump = "\n".join(table_texts(database_url).values())
    assert leaks(dump, "OLD")  # stored in clear, as configured
    args = argparse.Namespace(
        keys_command="rotate", keep_key=True, reencrypt=False, batch_size=5, pause_ms=0
    )
    on = settings.model_copy(update={"encryption_at_rest": True})
    assert run_keys(args, on) == 0
    for table, text in table_texts(database_url).items():
        assert not leaks(text, "OLD"), table
    with live_server(
        database_url=database_url, data_dir=data_dir, access_policy="scopes-only"
    ) as encrypted:
        api = encrypted.client(encrypted.practitioner_token(org=synthetic_orgnr()))
        plan = api.get(f"/{plan_url}").json()
        assert plan["note"] == [{"text": "MARKCAREPLANNOTEOLD"}]
        assert api.get(f"/{plan_url}/_history/1").json()["note"][0]["text"].endswith("OLD")
    # once data is encrypted, a server without the keys refuses to start
    with (
        pytest.raises(RuntimeError, match="did not start"),
        live_server(
            database_url=database_url,
            data_dir=data_dir,
            access_policy="scopes-only",
            encryption_at_rest=False,
        ),
    ):
        pass
