"""The demo page, and the endpoint it creates tasks with (a subscribe then starts them)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from streamapp import protocol

from .forms import STARTERS


def index(request: HttpRequest) -> HttpResponse:
    starters = [
        {"kind": kind, "form": starter.form(prefix=kind), "title": starter.title,
         "description": starter.description}
        for kind, starter in STARTERS.items()
    ]
    return render(request, "demo/index.html", {"starters": starters})


@require_POST
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
        {"key": task.task_key, "kind": kind, "fields": form.cleaned_data}, status=201
    )


def bad_request(message: str, **extra: object) -> JsonResponse:
    return JsonResponse(protocol.error("bad_request", message, **extra), status=400)
