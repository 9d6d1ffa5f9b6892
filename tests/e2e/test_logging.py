"""Logs: module loggers, the task key on every task record, nothing per event at INFO; the
docs' JSON logging example works as printed."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from streamapp.coordinator import coordinator
from tests.support.processes import ROOT
from tests.testapp.models import BurstTask, ErrorTask

KEY_IN_MESSAGE = re.compile(r"key=(\S+)")


@pytest.mark.django_db(transaction=True)
async def test_task_records_carry_their_key_and_events_log_nothing_at_info(caplog):
    caplog.set_level(logging.DEBUG, logger="streamapp")
    burst, failing = await BurstTask.objects.acreate(count=200), await ErrorTask.objects.acreate()
    for task in (burst, failing):
        assert await coordinator.start_task(task)
        assert await coordinator.wait_task(task, timeout=10)

    records = [r for r in caplog.records if r.name.startswith("streamapp.")]
    about_tasks = [r for r in records if KEY_IN_MESSAGE.search(r.getMessage())]
    assert {r.name for r in records} <= {"streamapp.runner", "streamapp.events",
                                         "streamapp.broadcast", "streamapp.consumers"}
    assert about_tasks
    for record in about_tasks:
        assert record.task_key == KEY_IN_MESSAGE.search(record.getMessage()).group(1)
    burst_info = [r.getMessage() for r in records
                  if r.levelno >= logging.INFO and getattr(r, "task_key", None) == burst.task_key]
    assert burst_info == [
        f"task claimed key={burst.task_key} owner={coordinator.owner} attempt=1",
        f"task ended key={burst.task_key} status=completed",
    ]
    failing_levels = [(r.levelname, r.getMessage().split(" key=")[0]) for r in records
                      if getattr(r, "task_key", None) == failing.task_key]
    assert failing_levels == [
        ("INFO", "task claimed"), ("WARNING", "task failed"), ("INFO", "task ended")
    ]


def test_the_json_logging_example_in_the_docs_emits_json_with_the_task_key():
    docs = (ROOT / "docs" / "operations.md").read_text()
    [example] = re.findall(r"```python\n(LOGGING = \{.*?\n\})\n```", docs, re.DOTALL)
    script = example + (
        "\nimport logging.config\n"
        "logging.config.dictConfig(LOGGING)\n"
        "logging.getLogger('streamapp.runner').info('task ended key=%s status=%s',"
        " 'demo.exampletask.7', 'completed', extra={'task_key': 'demo.exampletask.7'})\n"
        "logging.getLogger('streamapp.events').debug('not shown')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30, check=True)
    [line] = result.stderr.splitlines()
    record = json.loads(line)
    assert record["message"] == "task ended key=demo.exampletask.7 status=completed"
    assert record["task_key"] == "demo.exampletask.7"
    assert (record["level"], record["logger"]) == ("INFO", "streamapp.runner")
    assert "time" in record
