"""Run a GX suite on a pandas frame in an ephemeral context and summarise the result for people."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from ..config import quiet_third_party_telemetry


@dataclass
class SuiteOutcome:
    success: bool
    evaluated: int
    failed: list[dict]
    result_json: str


def run_suite(frame: pd.DataFrame, suite: tuple[str, list]) -> SuiteOutcome:
    quiet_third_party_telemetry()
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("warehouse_sample")
    asset = source.add_dataframe_asset("frame")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    name, expectations = suite
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}_validation", data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": frame})
    failed = []
    for res in result.results:
        if not res.success:
            cfg = res.expectation_config
            detail = res.result or {}
            failed.append({
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "unexpected_count": detail.get("unexpected_count"),
                "unexpected_percent": detail.get("unexpected_percent"),
                "examples": [str(v) for v in (detail.get("partial_unexpected_list") or [])[:5]],
            })
    return SuiteOutcome(
        success=bool(result.success),
        evaluated=len(result.results),
        failed=failed,
        result_json=json.dumps(result.to_json_dict(), default=str),
    )
