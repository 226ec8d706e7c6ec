"""The code location (the dg project's entry point): everything under `mvt_pipeline/defs/`.

`build_defs()` loads the folder again, so a test that points the settings at a tmp directory gets
resources for that directory.
"""

from pathlib import Path

import dagster as dg

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=_PROJECT_ROOT)


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
