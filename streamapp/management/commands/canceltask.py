"""``manage.py canceltask KEY``: cancel a task wherever it runs, and say how it ended."""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand, CommandError

from streamapp.exceptions import StreamAppError
from streamapp.ops.cancel import cancel_and_wait


class Command(BaseCommand):
    help = "Cancel the task KEY (app_label.model.pk) in whatever process runs it."

    def add_arguments(self, parser):
        parser.add_argument("key", help="the task key, e.g. demo.slowtask.7")
        parser.add_argument(
            "--timeout", type=float, default=10.0,
            help="seconds to wait for the task to end (default 10)",
        )

    def handle(self, *args, **options):
        try:
            status = asyncio.run(cancel_and_wait(
                options["key"], options["timeout"], reason="cancelled with manage.py canceltask"
            ))
        except (StreamAppError, TimeoutError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{options['key']} {status}")
