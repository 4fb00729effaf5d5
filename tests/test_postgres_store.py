"""The store and ingest tests again, on the real PostgreSQL (one private schema per test).

The test functions are imported from the SQLite suites and collected here a second time; the
autouse fixture below points their ``Store`` at PostgreSQL instead of a file. Same schema
files, same statements, same assertions.
"""

from __future__ import annotations

import pytest

import tests.test_ingest as _ingest
import tests.test_ingest_event_time as _event_time
import tests.test_time as _time
from central.store import Store
from tests.pgschema import private_schema
from tests.test_ingest import *  # noqa: F403  (the tests, collected again here)
from tests.test_ingest_event_time import *  # noqa: F403
from tests.test_time import (  # noqa: F401  (those of test_time that open a Store)
    test_corrections_apply_to_readings_stored_before_and_after_them,
    test_implausible_times_are_stored_flagged_and_never_judged,
    test_times_before_1978_are_relative_in_senml_and_rejected_without_a_receipt_time,
)


@pytest.fixture(autouse=True)
def _stores_on_postgres(monkeypatch):
    with private_schema("store") as url:
        opened: list[Store] = []

        def on_postgres(_path, **kwargs):
            store = Store(url, **kwargs)
            opened.append(store)
            return store

        for module in (_ingest, _event_time, _time):
            monkeypatch.setattr(module, "Store", on_postgres)
        yield
        for store in opened:
            store.close()


def test_the_store_under_test_is_postgres(tmp_path):
    store = _ingest.Store(tmp_path / "ignored.db")
    assert store.dialect == "postgresql"
    assert not (tmp_path / "ignored.db").exists()
