"""Raw dump ingestion: files in, `raw.events` and `raw.quarantine` out, nothing lost."""

from .raw_loader import FileResult, IngestSummary, ingest_partition, list_partition_files
from .warehouse_schema import PII_KINDS, ensure_raw_schema

__all__ = ["FileResult", "IngestSummary", "PII_KINDS", "ensure_raw_schema", "ingest_partition", "list_partition_files"]
