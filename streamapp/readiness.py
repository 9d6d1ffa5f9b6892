"""What stops this process from serving: the database or the channel layer not answering."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

logger = logging.getLogger("streamapp.readiness")

ROUND_TRIP_TIMEOUT = 2.0
_last_reported: list[list[str]] = [[]]  # the problems last logged, so a poller logs changes


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def readiness_problems() -> list[str]:
    problems = []
    try:
        await sync_to_async(_database_answers)()
    except Exception as exc:
        problems.append(f"database: {type(exc).__name__}: {exc}")
    layer = get_channel_layer()
    if layer is None:
        problems.append("channel layer: none configured (CHANNEL_LAYERS)")
    else:
        try:
            async with asyncio.timeout(ROUND_TRIP_TIMEOUT):
                channel = await layer.new_channel()
                await layer.send(channel, {"type": "ready.ping"})
                await layer.receive(channel)
        except Exception as exc:
            problems.append(f"channel layer: {type(exc).__name__}: {exc}")
    return problems


def report(problems: list[str]) -> None:
    """Log why this process is not ready: at WARNING when the reasons change, else at DEBUG."""
    changed = problems != _last_reported[0]
    _last_reported[0] = problems
    if problems:
        level = logging.WARNING if changed else logging.DEBUG
        logger.log(level, "not ready: %s", "; ".join(problems))
    elif changed:
        logger.info("ready again")
