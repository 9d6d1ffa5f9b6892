"""The demo page, and the endpoint it creates tasks with (a subscribe then starts them) and
reads their fields back with (a reloaded page rebuilds its cards from them)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import render

from streamapp import protocol
from streamapp.access import allowed
from streamapp.exceptions import UnknownTask
from streamapp.keys import aget_task

from .forms import STARTERS


def index(request: HttpRequest) -> HttpResponse:
    starters = [
        {"kind": kind, "form": starter.form(prefix=kind), "title": starter.title,
         "description": starter.description}
        for kind, starter in STARTERS.items()
    ]
    return render(request, "demo/index.html", {"starters": starters})


MAX_KEYS = 100


async def tasks(request: HttpRequest) -> HttpResponse:
    """``/demo/tasks/``: POST creates a task, GET describes tasks the page shows."""
    if request.method == "POST":
        return await create_task(request)
    if request.method in ("GET", "HEAD"):
        return await describe_tasks(request)
    return HttpResponseNotAllowed(["GET", "HEAD", "POST"])


async def describe_tasks(request: HttpRequest) -> JsonResponse:
    """``GET /demo/tasks/?key=…&key=…``: each demo task's kind, fields and creation time.

    What a card needs besides the stream (a slow task's bar is elapsed / seconds). Keys of no
    demo starter, of no task, or that the user may not watch are left out.
    """
    keys = request.GET.getlist("key")
    if len(keys) > MAX_KEYS:
        return bad_request(f"at most {MAX_KEYS} keys at a time, got {len(keys)}")
    kinds = {starter.form._meta.model: kind for kind, starter in STARTERS.items()}
    user = await request.auser()
    described = []
    for key in dict.fromkeys(keys):
        try:
            task = await aget_task(key)
        except UnknownTask:
            continue
        kind = kinds.get(type(task))
        if kind is None or not await allowed(task.can_subscribe, user):
            continue
        fields = {name: getattr(task, name) for name in STARTERS[kind].form._meta.fields}
        described.append({"key": task.task_key, "kind": kind, "fields": fields,
                          "created_at": task.created_at.isoformat()})
    return JsonResponse({"tasks": described})


async def create_task(request: HttpRequest) -> JsonResponse:
    """``POST /demo/tasks/`` with ``kind`` and that kind's form fields: 201 and the new task's key.

    The task is left ``pending``: the page subscribes to it and the subscription starts it.
    """
    kind = request.POST.get("kind", "")
    if kind not in STARTERS:
        expected = ", ".join(STARTERS)
        return bad_request(f"unknown kind {kind[:40]!r}; expected one of {expected}")
    form = STARTERS[kind].form(request.POST, prefix=kind)
    if not form.is_valid():
        problems = "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in form.errors.items()
        )
        return bad_request(problems, fields=form.errors.get_json_data())
    task = form.save(commit=False)
    await task.asave()
    return JsonResponse(
        {"key": task.task_key, "kind": kind, "fields": form.cleaned_data,
         "created_at": task.created_at.isoformat()},
        status=201,
    )


def bad_request(message: str, **extra: object) -> JsonResponse:
    return JsonResponse(protocol.error("bad_request", message, **extra), status=400)
