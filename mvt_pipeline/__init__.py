"""mvt_pipeline: warehouse-native analysis of multivariate (factorial) experiments."""

__version__ = "0.1.0"
