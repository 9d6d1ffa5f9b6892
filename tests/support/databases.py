"""Databases of their own for tests whose servers run in subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.processes import ProcessDatabase


@contextmanager
def process_database(tmp_path: Path, purpose: str) -> Iterator[ProcessDatabase]:
    """A migrated ProcessDatabase named after this run and ``purpose``, dropped afterwards."""
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path, f"{tag}_{purpose}").create()
    try:
        yield database
    finally:
        database.drop()


def module_process_database(purpose: str):
    """A module-scoped ``process_db`` fixture: one process database for a module's tests."""

    @pytest.fixture(scope="module")
    def process_db(tmp_path_factory):
        with process_database(tmp_path_factory.mktemp(purpose), purpose) as database:
            yield database

    return process_db
