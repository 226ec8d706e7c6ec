"""Load the YAML registry; a bad file fails naming the file, the path inside it and the reason."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from .models import Experiment, Metric, Registry


class RegistryError(ValueError):
    """The registry cannot be used; the message says which file, where, and why."""


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise RegistryError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a mapping at the top level")
    return data


def _format(path: Path, key: str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid registry"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in (key, *err["loc"]))
        lines.append(f"  at {loc}: {err['msg']}")
    return "\n".join(lines)


def load_registry(registry_dir: str | Path) -> Registry:
    registry_dir = Path(registry_dir)
    exp_path = registry_dir / "experiments.yaml"
    met_path = registry_dir / "metrics.yaml"
    raw_exps = _read_yaml(exp_path).get("experiments") or []
    raw_mets = _read_yaml(met_path).get("metrics") or []
    experiments: list[Experiment] = []
    for i, raw in enumerate(raw_exps):
        try:
            experiments.append(Experiment.model_validate(raw))
        except ValidationError as exc:
            ident = raw.get("id", "?") if isinstance(raw, dict) else "?"
            raise RegistryError(_format(exp_path, f"experiments[{i}] (id={ident})", exc)) from exc
    metrics: list[Metric] = []
    for i, raw in enumerate(raw_mets):
        try:
            metrics.append(Metric.model_validate(raw))
        except ValidationError as exc:
            ident = raw.get("name", "?") if isinstance(raw, dict) else "?"
            raise RegistryError(_format(met_path, f"metrics[{i}] (name={ident})", exc)) from exc
    try:
        return Registry(experiments=experiments, metrics=metrics)
    except ValidationError as exc:
        raise RegistryError(_format(exp_path, "registry", exc)) from exc
