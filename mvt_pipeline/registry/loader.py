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


def _validate_each(path: Path, key: str, ident: str, raws: list, model):
    """Validate each entry on its own, so the error names the entry's index and id."""
    out = []
    for i, raw in enumerate(raws):
        try:
            out.append(model.model_validate(raw))
        except ValidationError as exc:
            name = raw.get(ident, "?") if isinstance(raw, dict) else "?"
            raise RegistryError(_format(path, f"{key}[{i}] ({ident}={name})", exc)) from exc
    return out


def load_registry(registry_dir: str | Path) -> Registry:
    registry_dir = Path(registry_dir)
    exp_path = registry_dir / "experiments.yaml"
    met_path = registry_dir / "metrics.yaml"
    exp_yaml = _read_yaml(exp_path)
    raw_exps = exp_yaml.get("experiments") or []
    raw_mets = _read_yaml(met_path).get("metrics") or []
    experiments = _validate_each(exp_path, "experiments", "id", raw_exps, Experiment)
    metrics = _validate_each(met_path, "metrics", "name", raw_mets, Metric)
    try:
        return Registry(experiments=experiments, metrics=metrics, owners=exp_yaml.get("owners") or {})
    except ValidationError as exc:
        raise RegistryError(_format(exp_path, "registry", exc)) from exc
