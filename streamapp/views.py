"""HTTP endpoints: liveness, readiness, metrics, and a task's state without a socket."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from . import metrics, monitoring, protocol
from .access import allowed, denial
from .exceptions import StreamAppConfigurationError, UnknownTask
from .keys import aget_task, canonical_key, stream_task_model
from .positions import task_state
from .readiness import readiness_problems, report
from .tokens import aauthenticate, bearer_from_header


async def health(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. No I/O on purpose."""
    return HttpResponse("OK", content_type="text/plain")


async def ready(request: HttpRequest) -> HttpResponse:
    """Readiness: the database and the channel layer both answer.

    The public answer is ok or unavailable; the reasons go to the log, and to clients that may
    read /metrics (streamapp/monitoring.py).
    """
    problems = await readiness_problems()
    report(problems)
    if not problems:
        return JsonResponse({"ready": True, "status": "ok"})
    body: dict[str, object] = {"ready": False, "status": "unavailable"}
    if monitoring.restricted() and monitoring.may_read(request):
        body["problems"] = problems
    return JsonResponse(body, status=503)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition; collected in a thread (multiprocess mode reads files).

    Limited by METRICS_ALLOWED_ADDRESSES / METRICS_TOKEN when either is set (403 otherwise).
    """
    if monitoring.restricted() and not monitoring.may_read(request):
        return HttpResponse("metrics are not public\n", status=403, content_type="text/plain")
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
