"""`dagster-webserver` serves the workspace and its GraphQL API shows every asset, edge and check."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import PROJECT_ROOT
from .test_definitions import EXPECTED_ASSETS, EXPECTED_CHECKS, EXPECTED_PARENTS

QUERY = """
{
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(workdir):
    port = _free_port()
    exe = Path(sys.executable).parent / "dagster-webserver"
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(workdir.parent / "webserver.log", "w")
    proc = subprocess.Popen(
        [str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine can take minutes
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError((workdir.parent / "webserver.log").read_text())
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        else:
            raise AssertionError("webserver did not start in 300 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_graphql_lists_assets_edges_and_checks(webserver):
    nodes = None
    deadline = time.monotonic() + 240  # the code location may still be loading
    while time.monotonic() < deadline:
        try:
            resp = requests.post(f"{webserver}/graphql", json={"query": QUERY}, timeout=60)
            resp.raise_for_status()
            body = resp.json()
        except requests.RequestException as exc:  # busy machine: ask again
            body = {"error": str(exc)}
            time.sleep(2)
            continue
        nodes = (body.get("data") or {}).get("assetNodes")
        if nodes:
            break
        time.sleep(2)
    assert nodes, body
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert EXPECTED_ASSETS <= set(by_key)
    for child, parents in EXPECTED_PARENTS.items():
        deps = {"/".join(d["path"]) for d in by_key[child]["dependencyKeys"]}
        assert parents <= deps, (child, deps)
    checks = {
        (key, c["name"]) for key, n in by_key.items() for c in (n["assetChecksOrError"].get("checks") or [])
    }
    assert EXPECTED_CHECKS <= checks
