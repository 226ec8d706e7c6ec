"""Feature-flag audit: flagd parsing and the stale-flag classification (pure, no I/O beyond reading flags)."""

from .flagd import FlagDefinition, FlagFileError, load_flag_csv, load_flag_file, load_flag_files
from .stale_flags import AUDIT_COLUMNS, SEVERITY_ORDER, audit_flags, is_permanent_flag

__all__ = [
    "AUDIT_COLUMNS", "SEVERITY_ORDER", "FlagDefinition", "FlagFileError", "audit_flags", "is_permanent_flag",
    "load_flag_csv", "load_flag_file", "load_flag_files",
]
