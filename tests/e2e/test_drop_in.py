"""streamapp dropped into a new project, as a new user would, following only the README.

Builds the wheel, installs it into a new venv outside the repository, runs
``django-admin startproject``, adds an app whose model is the README's own, applies the README's
installation snippets taken from README.md itself (so the README cannot drift), migrates, serves
it with daphne and with uvicorn to a real WebSocket client, and runs the README's example test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import websockets

from tests.support.processes import ROOT, ServerProcess, free_port, wait_for_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("DATABASE_URL")),
        reason="the new project runs on its own SQLite and in-memory layer: once per CI run "
        "(the embedded-default pass) is enough",
    ),
]

README = (ROOT / "README.md").read_text()

# The user's own code around the README's snippets: a consumer for their own route, and a slow
# task to stop a server under.
ECHO_CONSUMER = '''
from channels.generic.websocket import AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)
'''
SLOW_TASK = '''

import asyncio


class Slow(StreamTask):
    async def process(self):
        for step in range(600):
            await self.send_event("tick", {"step": step})
            await asyncio.sleep(0.05)
'''


def snippet(name: str) -> str:
    """The code block under ``<!-- snippet: name -->`` in README.md."""
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\n```\w*\n(.*?)```", README, re.S)
    assert found, f"README.md has no snippet {name!r}"
    return found.group(1)


def clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without anything of this repository's test run."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "STREAMAPP_", "COVERAGE", "PYTHON"))
           and k not in {"DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV"}}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run(*args: str | Path, cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(), text=True,
                            capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


class Project:
    def __init__(self, root: Path, venv: Path) -> None:
        self.root, self.venv = root, venv
        self.python = venv / "bin" / "python"

    def manage(self, *args: str, timeout: float = 300) -> str:
        return run(self.python, "manage.py", *args, cwd=self.root, timeout=timeout)


class ProjectServer(ServerProcess):
    def __init__(self, project: Project, *command: str) -> None:
        super().__init__(clean_env())
        self.cwd = project.root
        self.port = free_port()
        self.argv = [str(project.venv / "bin" / command[0]),
                     *(part.format(port=self.port) for part in command[1:])]

    def command(self) -> list[str]:
        return self.argv

    def wait_until_ready(self) -> None:
        wait_for_port(self.port, self.process)

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a clean sdist (nothing of the working tree's build/ comes along)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=ROOT)
    [built] = out.glob("streamapp-*.whl")
    return built


@pytest.fixture(scope="module")
def project(wheel, tmp_path_factory) -> Project:
    started = time.monotonic()
    base = tmp_path_factory.mktemp("newuser")
    venv = base / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=base)
    pip = venv / "bin" / "pip"
    run(pip, "install", "-q", "--disable-pip-version-check", f"{wheel}", "uvicorn", "websockets",
        cwd=base)
    run(venv / "bin" / "django-admin", "startproject", "mysite", cwd=base)
    project = Project(base / "mysite", venv)
    project.manage("startapp", "reports")
    reports = project.root / "reports"
    (reports / "models.py").write_text(snippet("models.py") + SLOW_TASK)
    (reports / "consumers.py").write_text(ECHO_CONSUMER)
    (reports / "routing.py").write_text(snippet("routing.py"))
    (reports / "tests.py").write_text(snippet("tests.py"))
    settings = project.root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + snippet("settings.py"))
    (project.root / "mysite" / "asgi.py").write_text(snippet("asgi.py"))
    urls = project.root / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + "\n" + snippet("urls.py"))
    project.manage("makemigrations", "reports")
    project.manage("migrate", "--noinput")
    project.manage("shell", "-c", "from django.contrib.auth.models import User; "
                   "User.objects.create_user('alice')")
    print(f"drop-in project ready in {time.monotonic() - started:.0f} s")
    return project


def test_the_readme_lists_the_wheels_top_level_packages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"{wheel.name.split('-py3')[0]}.dist-info"
    top = sorted({name.split("/")[0] for name in names} - {dist_info})
    listed = re.search(r"The wheel's top-level packages: (.*?) \(", README).group(1)
    assert [name.strip("` ") for name in listed.split(",")] == top == ["consumers", "streamapp"]
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "streamapp/static/streamapp/streamapp.js" in names
    assert "streamapp/migrations/0001_initial.py" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    requires = [line for line in metadata.decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert [r.split()[1].split("<")[0].split(">")[0] for r in requires] == [
        "django", "channels", "daphne"]


def test_manage_py_check_is_clean(project):
    assert "System check identified no issues" in project.manage("check")


def bearer(project: Project) -> dict[str, str]:
    """The header of a token from ``manage.py minttoken`` (anonymous clients may not watch)."""
    return {"Authorization": f"Bearer {project.manage('minttoken', 'alice').split()[-1]}"}


async def watch(url: str, headers: dict[str, str] | None = None) -> tuple[list[dict], int]:
    frames = []
    async with websockets.connect(url, open_timeout=10, additional_headers=headers) as ws:
        try:
            async for message in ws:
                frames.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass  # closed with a code other than 1000: the test looks at it
    return frames, ws.close_code


def create(project: Project, model: str, *fields: str) -> str:
    return project.manage("starttask", model, *fields, "--pending").splitlines()[-1]


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
async def test_a_task_streams_and_the_users_own_route_answers_beside_it(project, server):
    key = create(project, "reports.Report", "title=Q3")
    headers = bearer(project)
    command = {
        "daphne": ("daphne", "-p", "{port}", "mysite.asgi:application"),
        "uvicorn": ("uvicorn", "--port", "{port}", "mysite.asgi:application"),
    }[server]
    with ProjectServer(project, *command) as served:
        path = f"/ws/tasks/{key.replace('.', '/')}/"
        refused, refused_code = await watch(served.ws(path))  # anonymous
        frames, code = await watch(served.ws(path), headers)
        async with websockets.connect(served.ws("/ws/echo/")) as echo:
            await echo.send("hello")
            assert await asyncio.wait_for(echo.recv(), timeout=5) == "hello"
        elsewhere, close = await watch(served.ws("/ws/nowhere/"))
    assert refused[0]["code"] == "forbidden" and refused_code == 4403
    assert code == 1000
    events = [f for f in frames if f["type"] == "event"]
    assert [e["seq"] for e in events] == list(range(1, 12))
    assert [e["event"] for e in events] == ["start"] + ["progress"] * 10
    assert frames[-1]["status"] == "completed" and frames[-1]["final_value"] == {"rows": 10}
    assert elsewhere[0]["code"] == "not_found" and close == 4404
    assert "Traceback" not in served.output, served.output


async def test_sigterm_to_uvicorn_mid_task_ends_the_task_in_a_final_status(project):
    key = create(project, "reports.Slow")
    headers = bearer(project)
    served = ProjectServer(project, "uvicorn", "--port", "{port}", "mysite.asgi:application")
    with served:
        url = served.ws(f"/ws/tasks/{key.replace('.', '/')}/")
        async with websockets.connect(url, additional_headers=headers) as ws:
            while json.loads(await asyncio.wait_for(ws.recv(), timeout=10))["type"] != "event":
                pass
            served.process.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), timeout=10)
        assert ws.close_code == 1012
        output = served.stop(None, timeout=30)
    assert "Application shutdown complete" in output, output
    shown = project.manage("shell", "-c", f"from reports.models import Slow; "
                           f"t = Slow.objects.get(pk={key.split('.')[-1]}); "
                           f"print(t.status, t.error['type'])")
    assert shown.splitlines()[-1].split() == ["cancelled", "WorkerShutdown"]


def test_the_readmes_example_test_passes(project):
    output = project.manage("test", "reports", "-v", "2")
    assert "test_a_report_streams_its_progress" in output and "OK" in output, output
