"""BenchTask: the StreamTask the benchmark watches through the real consumers."""

from django.db import models

from streamapp.models import StreamTask

from .wire import EVENT_NAME, event_data, ticks


class BenchTask(StreamTask):
    """Emits ``events`` events at ``rate`` per second (0: as fast as it can)."""

    events = models.PositiveIntegerField(default=0)
    rate = models.FloatField(default=0)

    async def process(self) -> int:
        async for _ in ticks(self.events, self.rate):
            await self.send_event(EVENT_NAME, event_data())
        return self.events
