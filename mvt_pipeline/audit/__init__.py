"""Feature-flag audit: flagd parsing and the stale-flag classification (pure, no I/O beyond reading flags)."""

from .flag_csv import load_flag_csv
from .flagd import FlagDefinition, FlagFileError, load_flag_file, load_flag_files, parse_metadata_date
from .stale_flags import AUDIT_COLUMNS, NEEDS_ACTION, SEVERITY_ORDER, audit_flags, is_permanent_flag

__all__ = [
    "AUDIT_COLUMNS", "NEEDS_ACTION", "SEVERITY_ORDER", "FlagDefinition", "FlagFileError", "audit_flags",
    "is_permanent_flag", "load_flag_csv", "load_flag_file", "load_flag_files", "parse_metadata_date",
]
