"""The demo tasks of DESIGN §5: used by the README, the demo page and the acceptance tests."""

import asyncio
import time

from django.db import models

from streamapp.models import StreamTask


class ExampleTask(StreamTask):
    message = models.CharField(max_length=200, default="", blank=True)
    steps = models.PositiveIntegerField(default=3)
    delay = models.FloatField(default=0.01)

    async def process(self):
        await self.send_event("start", {"message": self.message, "total_steps": self.steps})
        for step in range(1, self.steps + 1):
            await asyncio.sleep(self.delay)
            await self.send_event("progress", {"step": step, "total_steps": self.steps})
        await self.send_event("complete", {"message": self.message})
        return f"Completed processing: {self.message}"


class FailingTask(StreamTask):
    fail_at = models.PositiveIntegerField(default=2)

    async def process(self):
        for step in range(1, self.fail_at):
            await self.send_event("progress", {"step": step})
        raise RuntimeError("boom")


class SignalTask(StreamTask):
    message = models.CharField(max_length=200, default="", blank=True)

    async def process(self):
        await self.send_event("started", {"message": self.message})
        data = await self.wait_signal("continue")
        await self.send_event("final", {"data": data})
        await self.send_event("complete", {})
        return data


class SlowTask(StreamTask):
    seconds = models.FloatField(default=30)

    async def process(self):
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self.seconds:
            await self.send_event("progress", {"elapsed": round(elapsed, 3)})
            await asyncio.sleep(0.1)
        return {"elapsed": round(time.monotonic() - started, 3)}
