"""`dagster dev` serves the workspace (started as a user would, with the venv's binaries but without
the venv on PATH), and its GraphQL API shows every asset, edge and check, and the catalogue."""

import os
import signal
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
    groupName
    dependencyKeys { path }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    partitionDefinition { description }
    metadataEntries {
      label
      ... on TableSchemaMetadataEntry { schema { columns { name type } } }
    }
    assetMaterializations(limit: 1) {
      partition
      metadataEntries {
        label
        ... on IntMetadataEntry { intValue }
        ... on TextMetadataEntry { text }
        ... on TableSchemaMetadataEntry { schema { columns { name type } } }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(workdir):
    # one small night in the instance the webserver serves, so materializations carry row counts
    from mvt_pipeline.nights import run_job

    from .pipeline_runner import generate

    generate(workdir, users=400, days=1, seed=8)
    assert run_job("nightly", "2026-11-02").success
    port = _free_port()
    exe = Path(sys.executable).parent / "dagster"
    bin_dir = str(exe.parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir)
    env = {**os.environ, "PATH": path or "/usr/bin:/bin"}
    log = open(workdir.parent / "webserver.log", "w")
    proc = subprocess.Popen(
        [str(exe), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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
        os.killpg(proc.pid, signal.SIGTERM)  # dagster dev, its webserver, daemon and code servers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
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

    # the catalogue: owners, daily partitions, table names / column schemas, row counts per run
    for key, node in by_key.items():
        assert node["owners"], key
        assert "Daily" in (node["partitionDefinition"] or {}).get("description", ""), key
    assert by_key["stg_events"]["groupName"] == "staging" and by_key["agg_cell_stats"]["groupName"] == "marts"
    assert {"team": "team-checkout"} in by_key["factorial_effects"]["owners"]  # the registry owner
    assert by_key["decision_reports"]["assetMaterializations"][0]["partition"] == "2026-11-02"  # HTML, no table
    for key in ("raw_events", "factorial_effects", "experiment_decisions", "stg_events", "agg_cell_stats"):
        mats = by_key[key]["assetMaterializations"]
        assert mats and mats[0]["partition"] == "2026-11-02", key
        entries = {e["label"]: e for e in mats[0]["metadataEntries"]}
        assert entries["dagster/row_count"]["intValue"] > 0, key
        schema = entries.get("dagster/column_schema") or {
            e["label"]: e for e in by_key[key]["metadataEntries"]}.get("dagster/column_schema")
        assert schema and all(c["type"] for c in schema["schema"]["columns"]), key
    effects_cols = {c["name"] for c in {e["label"]: e for e in by_key["factorial_effects"]["assetMaterializations"][0][
        "metadataEntries"]}["dagster/column_schema"]["schema"]["columns"]}
    assert {"as_of", "experiment_id", "estimate", "seq_ci_low", "computed_at"} <= effects_cols
