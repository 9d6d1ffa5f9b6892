"""Databases of their own for tests whose servers run in subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import ProcessDatabase


@contextmanager
def process_database(tmp_path: Path, purpose: str) -> Iterator[ProcessDatabase]:
    """A migrated ProcessDatabase named after this run and ``purpose``, dropped afterwards."""
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path, f"{tag}_{purpose}").create()
    try:
        yield database
    finally:
        database.drop()
