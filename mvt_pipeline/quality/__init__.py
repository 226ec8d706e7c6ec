"""Data-quality gates: Great Expectations 1.x suites built in pure code, run on warehouse samples."""
