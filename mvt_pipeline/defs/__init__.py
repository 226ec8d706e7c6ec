"""Dagster definitions, loaded as a folder by `mvt_pipeline/definitions.py` (the dg project shape):
every asset, check, job, schedule and sensor defined at the top level of a module here is found by
`dg.load_from_defs_folder`; the resources and the executor come from `resources.py`."""
