"""``manage.py starttask app_label.Model field=value …``: create a task, start it, print its key."""

from __future__ import annotations

import asyncio

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from streamapp.coordinator import coordinator
from streamapp.exceptions import UnknownTask
from streamapp.keys import stream_task_model
from streamapp.models import StreamTask


def parse_fields(model: type[StreamTask], assignments: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep:
            raise CommandError(f"expected field=value, got {assignment!r}")
        try:
            field = model._meta.get_field(name)
            values[name] = field.to_python(raw)
        except Exception as exc:
            raise CommandError(f"{model.__name__}.{name}: {exc}") from exc
    return values


class Command(BaseCommand):
    help = "Create a StreamTask, start it, and print its key on the last line."

    def add_arguments(self, parser):
        parser.add_argument("model", help="app_label.Model, e.g. demo.ExampleTask")
        parser.add_argument("fields", nargs="*", help="field=value pairs")
        parser.add_argument(
            "--pending",
            action="store_true",
            help="only create it: its first subscriber (or a runtasks worker) starts it",
        )

    def handle(self, *args, **options):
        app_label, _, model_name = options["model"].partition(".")
        try:
            model = stream_task_model(app_label, model_name)
        except UnknownTask as exc:
            raise CommandError(str(exc)) from exc
        values = parse_fields(model, options["fields"])
        task = model(**values)
        try:
            task.full_clean()
        except ValidationError as exc:
            raise CommandError(f"invalid task: {exc}") from exc
        task.save()
        if options["pending"]:
            self.stdout.write("Left pending: the first subscriber starts it.")
        else:
            status = asyncio.run(self.run_here(task))
            if status is None:
                self.stdout.write("Handed to the runtasks workers (RUN_TASKS is off here).")
            else:
                self.stdout.write(f"Ran here and ended {status}.")
        self.stdout.write(task.task_key)

    async def run_here(self, task: StreamTask) -> str | None:
        """Run the task in this process until it ends; None when the workers run it."""
        if not await coordinator.start_task(task):
            raise CommandError(f"{task.task_key} could not be started")
        if not coordinator.is_task_running(task):
            return None
        await coordinator.wait_task(task)
        await coordinator.shutdown(timeout=0)
        await task.arefresh_from_db(fields=["status"])
        return task.status
