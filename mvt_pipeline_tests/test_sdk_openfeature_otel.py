"""OpenFeature's Python SDK evaluating the project's own flagd files in process (flagd provider, file
mode), with a hook that records each evaluation as an OpenTelemetry `feature_flag.evaluation` log
event, written as OTLP/JSON by OpenTelemetry's file exporter: read with `format: otel` (issue #17),
through the whole nightly graph. The truth is what the SDK served (the hook's own record)."""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import pytest
import yaml
from scipy import stats

from .conftest import SAMPLE_FLAGS, SAMPLE_REGISTRY
from .pipeline_runner import query, run_graph

# the dev extra's real clients (`make test` installs them; a missing one fails, never skips)
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.hook import Hook
# the package re-exports only its span and metric exporters; the log exporter lives here
from opentelemetry.exporter.otlp.json.file._log_exporter import FileLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

DAY = "2026-11-02"
NIGHT_NS = 1_793_613_600_000_000_000  # 2026-11-02T10:00:00Z
USERS = 900
FLAGS = {"checkout-cta-color": "cta_color", "checkout-validation": "validation", "checkout-copy": "copy"}


class OtelEvaluationHook(Hook):
    """Records every successful evaluation as the semantic conventions' `feature_flag.evaluation`."""

    def __init__(self, logger, served):
        self.logger, self.served = logger, served

    def after(self, hook_context, details, hints):
        unit = hook_context.evaluation_context.targeting_key
        self.served[unit][details.flag_key] = details.variant
        self.logger.emit(event_name="feature_flag.evaluation", timestamp=NIGHT_NS + len(self.served) * 1000,
                         attributes={"feature_flag.key": details.flag_key, "feature_flag.result.variant": details.variant,
                                     "feature_flag.context.id": unit,
                                     "feature_flag.provider.name": hook_context.provider_metadata.name})


def _evaluate(flags_file, out_file) -> dict[str, dict[str, str]]:
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout-svc"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(FileLogExporter(str(out_file))))
    served: dict = collections.defaultdict(dict)
    api.set_provider_and_wait(FlagdProvider(resolver_type=ResolverType.IN_PROCESS,
                                            offline_flag_source_path=str(flags_file)))
    hook = OtelEvaluationHook(provider.get_logger("mvt.tests.flags"), served)
    api.add_hooks([hook])
    try:
        client = api.get_client()
        for i in range(USERS):
            context = EvaluationContext(targeting_key=f"user-{i}")
            for flag in FLAGS:
                client.get_string_value(flag, "none", context)
    finally:
        api.clear_hooks()
        api.shutdown()
        provider.shutdown()  # flushes the batch to the file
    return served


def test_openfeature_flagd_otel_events_run_through_the_night(tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_FLAGS, data / "flags")
    (data / "registry").mkdir(parents=True)
    registry = yaml.safe_load((SAMPLE_REGISTRY / "experiments.yaml").read_text())
    checkout = next(e for e in registry["experiments"] if e["id"] == "checkout_mvt")
    (data / "registry" / "experiments.yaml").write_text(yaml.safe_dump({"experiments": [checkout]}, sort_keys=False))
    shutil.copy(SAMPLE_REGISTRY / "metrics.yaml", data / "registry" / "metrics.yaml")
    (data / "registry" / "sources.yaml").write_text(yaml.safe_dump({"sources": [{"name": "otel_logs", "format": "otel"}]}))
    for var, value in {"MVT_DATA_DIR": data, "MVT_DUCKDB_PATH": data / "warehouse" / "mvt.duckdb",
                       "MVT_REPORTS_DIR": data / "reports"}.items():
        monkeypatch.setenv(var, str(value))
    folder = data / "raw" / "otel_logs" / f"dt={DAY}"
    folder.mkdir(parents=True)
    served = _evaluate(data / "flags" / "checkout.flagd.json", folder / "flag-events.jsonl")
    assert len(served) == USERS

    rng = np.random.default_rng(5)  # the app's conversions, in the contract, from another source
    converted = {u: bool(rng.random() < 0.10 + 0.04 * (v["checkout-copy"] == "benefits")) for u, v in served.items()}
    app = data / "raw" / "app" / f"dt={DAY}"
    app.mkdir(parents=True)
    (app / "checkout.jsonl").write_text("".join(
        json.dumps({"event_id": f"c-{u}", "event_type": "metric", "ts": f"{DAY}T20:00:00Z", "unit_id": u,
                    "metric": "checkout", "value": 1}) + "\n" for u, c in sorted(converted.items()) if c))

    (night,) = run_graph(data, [DAY])
    assert night.success
    assert query(data, "select count(*) n from raw.quarantine").n[0] == 0
    read = query(data, "select sum(rows_read) n from raw.ingest_log where source = 'otel_logs'").n[0]
    assert read == USERS * len(FLAGS)  # one row per log record, every one accepted

    cells = query(data, "select cell_id, n, sum from marts.agg_cell_stats where experiment_id = 'checkout_mvt' "
                        "and metric = 'checkout_conversion' and segment = 'overall'")
    got = {r.cell_id: (int(r.n), round(float(r.sum))) for r in cells.itertuples()}
    want: dict = collections.defaultdict(lambda: [0, 0])
    for unit, variants in served.items():
        cell = "|".join(f"{factor}={variants[flag]}" for flag, factor in FLAGS.items())
        want[cell][0] += 1
        want[cell][1] += converted[unit]
    assert got == {k: tuple(v) for k, v in want.items()}
    assert len(got) == 12  # 2 x 2 x 3: the flags are bucketed independently (salted by flag key)

    srm = query(data, "select p_value from analysis.srm where as_of = ? and experiment_id = 'checkout_mvt'", [DAY])
    observed = [want[c][0] for c in sorted(want)]
    # the registry's plan (no weights: equal shares per level), which SRM tests the served cells against
    shares = {f["name"]: {lv: 1 / len(f["levels"]) for lv in f["levels"]} for f in checkout["factors"]}
    expected = [USERS * np.prod([shares[p.split("=")[0]][p.split("=")[1]] for p in c.split("|")]) for c in sorted(want)]
    expected = np.array(expected) * USERS / sum(expected)
    assert srm.p_value[0] == pytest.approx(stats.chisquare(observed, expected).pvalue, rel=1e-9)
