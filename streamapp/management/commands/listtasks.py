"""``manage.py listtasks [--model app_label.Model …] [--status failed …] [--limit N]``"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from streamapp.exceptions import UnknownTask
from streamapp.keys import stream_task_model, stream_task_models
from streamapp.models import Status
from streamapp.ops.listing import recent_tasks, table, task_row


class Command(BaseCommand):
    help = "List the newest tasks as a table, filtered by model and status."

    def add_arguments(self, parser):
        parser.add_argument("--model", "-m", action="append", default=[],
                            help="app_label.Model; repeat for several (default: every model)")
        parser.add_argument("--status", "-s", action="append", default=[], choices=Status.values,
                            help="repeat for several (default: any)")
        parser.add_argument("--limit", "-n", type=int, default=50, help="at most this many rows")

    def handle(self, *args, **options):
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        models = []
        for name in options["model"]:
            app_label, _, model_name = name.partition(".")
            try:
                models.append(stream_task_model(app_label, model_name))
            except UnknownTask as exc:
                raise CommandError(str(exc)) from exc
        tasks = recent_tasks(models or stream_task_models(), options["status"], options["limit"])
        if not tasks:
            self.stdout.write("No tasks match.")
            return
        for line in table([task_row(task) for task in tasks]):
            self.stdout.write(line)
