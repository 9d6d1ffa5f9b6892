"""The stack routes streamapp's own sockets as channels' URLRouter would, and nothing else."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from django.urls import path, re_path

from streamapp.adapters.routing import DIRECT, DirectRoutes, probe_direct


def app(name, ours):
    async def application(scope, receive, send):
        return name, scope

    application.__name__ = name
    if ours:
        setattr(application, DIRECT, True)
    return application


TASK = app("task", ours=True)
MANY = app("many", ours=True)
MINE = app("mine", ours=False)


async def routed_by_router(router, scope):
    """What URLRouter calls, and the keys it adds to the scope."""
    name, seen = await router(scope, None, None)
    return name, {k: seen[k] for k in ("path_remaining", "url_route")}


def routed_directly(router, scope):
    found = DirectRoutes(router).match(scope)
    if found is None:
        return None
    application, added = found
    return application.__name__, added


@pytest.mark.parametrize("scope", [
    {"type": "websocket", "path": "/ws/tasks/testapp/steptask/7/"},
    {"type": "websocket", "path": "/ws/tasks/"},
    {"type": "websocket", "path": "/prefix/ws/tasks/a/b/1/", "root_path": "/prefix"},
    {"type": "websocket", "path": "/x", "path_remaining": "ws/tasks/a/b/2/",
     "url_route": {"args": (), "kwargs": {"outer": "1"}}},
])
async def test_streamapp_routes_are_matched_as_the_router_matches_them(scope):
    router = URLRouter([
        path("ws/tasks/", MANY),
        path("ws/tasks/<str:app_label>/<str:model>/<str:pk>/", TASK, {"extra": True}),
        path("mine/", MINE),
    ])
    assert routed_directly(router, scope) == await routed_by_router(router, scope)


async def test_a_project_route_that_comes_first_is_left_to_the_router():
    router = URLRouter([
        re_path(r"^ws/tasks/special/", MINE),
        path("ws/tasks/<str:app_label>/<str:model>/<str:pk>/", TASK),
    ])
    scope = {"type": "websocket", "path": "/ws/tasks/special/x/1/"}
    assert routed_directly(router, scope) is None
    assert (await routed_by_router(router, scope))[0] == "mine"


def test_unmatched_paths_and_other_routers_are_left_alone():
    router = URLRouter([path("ws/tasks/", MANY), path("mine/", MINE)])
    assert routed_directly(router, {"type": "websocket", "path": "/mine/"}) is None
    assert routed_directly(router, {"type": "websocket", "path": "/nowhere/"}) is None
    assert DirectRoutes(MINE).match({"type": "websocket", "path": "/ws/tasks/"}) is None

    class MyRouter(URLRouter):
        pass

    assert DirectRoutes(MyRouter([path("ws/tasks/", MANY)])).match(
        {"type": "websocket", "path": "/ws/tasks/"}
    ) is None


def test_the_installed_channels_routes_as_expected():
    assert probe_direct() == []
