"""``manage.py tailtask KEY``: watch a task's events live, with a progress bar, until it ends."""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand, CommandError

from streamapp.exceptions import UnknownTask
from streamapp.models import Status
from streamapp.ops.tail import describe, follow, progress_bar, progress_of


class Command(BaseCommand):
    help = ("Print a task's events as they happen, with a progress bar from progress events' "
            "step/total; exit when it ends (status 1 unless it completed).")

    def add_arguments(self, parser):
        parser.add_argument("key", help="task key, e.g. demo.exampletask.42")
        parser.add_argument("--since", type=int, default=0, help="show events after this seq")
        parser.add_argument("--interval", type=float, default=0.2,
                            help="seconds between looks at the log")

    def handle(self, *args, **options):
        try:
            final = asyncio.run(self.tail(options["key"], options["since"], options["interval"]))
        except UnknownTask as exc:
            raise CommandError(str(exc)) from exc
        if final["status"] != Status.COMPLETED:
            raise CommandError(f"{final['task']} ended {final['status']}")

    async def tail(self, key: str, since: int, interval: float) -> dict:
        """Write each frame; on a terminal, progress redraws one line instead of scrolling."""
        redraw = self.stdout.isatty()
        pending_newline = False
        frame: dict = {}
        async for frame in follow(key, since=since, interval=interval):
            line = describe(frame)
            progress = progress_of(frame.get("data")) if frame["type"] == "event" else None
            if progress is not None:
                line = f"{progress_bar(*progress)}  {line}"
            if redraw and progress is not None:
                self.stdout.write(f"\r\x1b[2K{line}", ending="")
                self.stdout.flush()
                pending_newline = True
                continue
            if pending_newline:
                self.stdout.write("")
                pending_newline = False
            self.stdout.write(line)
        return frame
