"""HTTP endpoints: liveness, readiness, metrics, and a task's state without a socket."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from . import metrics, protocol
from .access import allowed, denial
from .exceptions import StreamAppConfigurationError, UnknownTask
from .keys import aget_task, canonical_key, stream_task_model
from .positions import task_state
from .readiness import readiness_problems
from .tokens import aauthenticate, bearer_from_header


async def health(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. No I/O on purpose."""
    return HttpResponse("OK", content_type="text/plain")


async def ready(request: HttpRequest) -> HttpResponse:
    """Readiness: the database and the channel layer both answer."""
    problems = await readiness_problems()
    if problems:
        return JsonResponse({"ready": False, "problems": problems}, status=503)
    return JsonResponse({"ready": True})


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition; collected in a thread (multiprocess mode reads files)."""
    try:
        body, content_type = await sync_to_async(metrics.exposition, thread_sensitive=False)()
    except StreamAppConfigurationError as exc:  # no streamapp[metrics], or a bad multiprocess dir
        return HttpResponse(str(exc), content_type="text/plain", status=501)
    return HttpResponse(body, content_type=content_type)


async def task_state_view(
    request: HttpRequest, app_label: str, model: str, pk: str
) -> JsonResponse:
    """``GET /tasks/<app_label>/<model>/<pk>/``: the task's ``state`` frame as JSON."""
    try:
        key = canonical_key(stream_task_model(app_label, model), pk)
        task = await aget_task(key)
    except UnknownTask as exc:
        return JsonResponse(protocol.error("not_found", str(exc)), status=404)
    token = bearer_from_header(request.headers.get("Authorization"))
    problem = None
    if token is not None:
        user, problem = await aauthenticate(token)
    else:
        user = await request.auser()
    if not await allowed(task.can_subscribe, user):
        message = denial(f"you may not watch {key}", problem)
        return JsonResponse(protocol.error("forbidden", message, key), status=403)
    return JsonResponse(await task_state(task))
