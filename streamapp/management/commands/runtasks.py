"""``manage.py runtasks``: execute StreamTasks in this process, serving no sockets."""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand

from streamapp.checks import mark_worker_process
from streamapp.conf import app_settings
from streamapp.runner.worker import Worker


class Command(BaseCommand):
    help = (
        "Run pending StreamTasks of every model until SIGTERM/SIGINT, which stops claiming and "
        "ends the running ones within STREAMAPP['SHUTDOWN_TIMEOUT']."
    )

    def execute(self, *args, **options):
        mark_worker_process()  # before the system checks: tasks run apart from the sockets
        try:
            return super().execute(*args, **options)
        finally:
            mark_worker_process(False)

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency", type=int, default=None,
            help="tasks run at once (default: STREAMAPP['WORKER_CONCURRENCY'])",
        )
        parser.add_argument(
            "--until-idle", action="store_true",
            help="exit once no task is pending and none runs here",
        )

    def handle(self, *args, **options):
        worker = Worker(concurrency=options["concurrency"], report=self.report)
        self.report(
            f"runtasks: concurrency={worker.concurrency} lease={app_settings.LEASE_SECONDS}s "
            f"shutdown_timeout={app_settings.SHUTDOWN_TIMEOUT}s"
        )
        ran = asyncio.run(self.serve(worker, options["until_idle"]))
        self.report(f"runtasks: stopped after {ran} runs")

    async def serve(self, worker: Worker, until_idle: bool) -> int:
        worker.install_signal_handlers()
        return await worker.run(until_idle=until_idle)

    def report(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
