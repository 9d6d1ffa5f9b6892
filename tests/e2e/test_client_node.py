"""The streamapp.js package (streamapp/static/streamapp/) checked with its own tools.

- ``node --test`` runs client/test/ against a real daphne on the demo settings, over Node's own
  WebSocket;
- ``tsc`` regenerates streamapp.d.ts from the JSDoc (it must match the committed file) and
  type-checks streamapp.js and a typed example that imports the package by name.

scripts/client.sh installs the tools (``npm ci`` in client/); scripts/test runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib

import pytest

from tests.support.processes import ROOT, Daphne, ProcessDatabase

pytestmark = pytest.mark.slow

CLIENT = ROOT / "client"
PACKAGE = ROOT / "streamapp" / "static" / "streamapp"
# The type checks read files only: the embedded run does them, the services run need not again.
static_check = pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")),
                                  reason="a static check: run once, on the embedded default")


def run(*command: str, env: dict[str, str] | None = None, timeout: float = 100) -> str:
    """Run a tool in client/; fails the test with its output when it fails."""
    if shutil.which("node") is None or not (CLIENT / "node_modules" / "typescript").is_dir():
        pytest.fail("the client's tools are missing: run scripts/client.sh (node 20.10+, npm ci)")
    result = subprocess.run(command, cwd=CLIENT, env=env, capture_output=True, text=True,
                            check=False, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def daphne(tmp_path_factory):
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path_factory.mktemp("client_node"), f"{tag}_node").create()
    prefix = os.environ.get("STREAMAPP_LAYER_PREFIX", "asgi")
    env = {**database.env, "DJANGO_SETTINGS_MODULE": "demo.settings",
           "STREAMAPP_LAYER_PREFIX": f"{prefix}_node"}
    server = Daphne(env).start()
    yield server
    output = server.stop()
    database.drop()
    assert "Traceback" not in output, output


def test_node_test_runner_against_daphne(daphne):
    env = {**os.environ, "STREAMAPP_SERVER": daphne.url}
    output = run("node", "--experimental-websocket", "--no-warnings", "--test",
                 "--test-timeout=60000", "--test-reporter=spec", "test/", env=env)
    print(output)
    summary = dict(re.findall(r"ℹ (tests|pass|fail) (\d+)", output))
    assert int(summary["fail"]) == 0 and int(summary["pass"]) >= 10, output


@static_check
def test_the_declarations_are_generated_from_the_jsdoc(tmp_path):
    run("node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.types.json",
        "--outDir", str(tmp_path))
    generated = (tmp_path / "streamapp.d.ts").read_text()
    assert generated == (PACKAGE / "streamapp.d.ts").read_text(), (
        "streamapp.d.ts is stale: run `npm run types` in client/ and commit it")


@static_check
def test_the_typed_example_and_the_jsdoc_type_check():
    run("node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json", "--noEmit")


def test_the_package_names_its_files_and_the_python_version():
    package = json.loads((PACKAGE / "package.json").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert package["version"] == project["version"]
    assert package["exports"]["."] == {"types": "./streamapp.d.ts", "default": "./streamapp.js"}
    for name in package["files"]:
        assert (PACKAGE / name).is_file(), name
