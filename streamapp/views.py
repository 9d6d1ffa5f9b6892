"""HTTP endpoints: liveness, readiness, metrics, and tasks' states without a socket."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from . import metrics, monitoring, protocol
from .access import allowed, denial
from .exceptions import BadQuery, StreamAppConfigurationError, UnknownTask
from .keys import aget_task, canonical_key, stream_task_model
from .positions import task_state
from .readiness import readiness_problems, report
from .tasklist import list_tasks, parse_query
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


async def requesting_user(request: HttpRequest) -> tuple[Any, str | None]:
    """The user a request speaks for: its bearer token's, else its session's.

    The second item says why a token was refused (the user is then anonymous).
    """
    token = bearer_from_header(request.headers.get("Authorization"))
    if token is not None:
        return await aauthenticate(token)
    return await request.auser(), None


@require_safe
async def task_state_view(
    request: HttpRequest, app_label: str, model: str, pk: str
) -> JsonResponse:
    """``GET /tasks/<app_label>/<model>/<pk>/``: the task's ``state`` frame as JSON."""
    try:
        key = canonical_key(stream_task_model(app_label, model), pk)
        task = await aget_task(key)
    except UnknownTask as exc:
        return JsonResponse(protocol.error("not_found", str(exc)), status=404)
    user, problem = await requesting_user(request)
    if not await allowed(task.can_subscribe, user):
        message = denial(f"you may not watch {key}", problem)
        return JsonResponse(protocol.error("forbidden", message, key), status=403)
    return JsonResponse(await task_state(task))


@require_safe
async def task_list_view(request: HttpRequest) -> JsonResponse:
    """``GET /tasks/``: the tasks the user may watch, newest first (DESIGN §3, docs/protocol.md)."""
    try:
        query = parse_query(request.GET)
    except BadQuery as exc:
        return JsonResponse(protocol.error("bad_request", str(exc)), status=400)
    user, problem = await requesting_user(request)
    if problem is not None:  # an empty list would hide why: say it
        return JsonResponse(protocol.error("forbidden", denial("no tasks listed", problem)),
                            status=403)
    tasks, following = await sync_to_async(list_tasks)(user, query)
    next_url = None
    if following is not None:
        params = request.GET.copy()
        params["cursor"] = following.encode()
        next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return JsonResponse({"tasks": tasks, "next": next_url})
