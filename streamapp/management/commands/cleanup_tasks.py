"""``manage.py cleanup_tasks --older-than 7d [--dry-run]``"""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand, CommandError

from streamapp.ops.cleanup import cleanup_finished, parse_age


class Command(BaseCommand):
    help = "Delete tasks that ended (completed, failed, cancelled) long ago, and their events."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True,
                            help="age since the task ended: 45s, 30m, 12h, 7d, 2w")
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, **options):
        try:
            age = parse_age(options["older_than"])
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from exc
        report = asyncio.run(cleanup_finished(age, dry_run=options["dry_run"]))
        verb = "Would delete" if report.dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {report.task_count} tasks and {report.events} events "
            f"(ended before {report.cutoff.isoformat(timespec='seconds')})."
        )
        for label, count in sorted(report.tasks.items()):
            self.stdout.write(f"  {label}: {count}")
