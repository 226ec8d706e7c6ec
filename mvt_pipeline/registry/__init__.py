"""The experiment and metric registry: YAML in, validated pydantic models out."""

from .loader import RegistryError, load_registry
from .models import Experiment, Factor, Metric, Registry, is_valid_name

__all__ = ["Experiment", "Factor", "Metric", "Registry", "RegistryError", "is_valid_name", "load_registry"]
