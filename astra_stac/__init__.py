"""astra-stac: a self-hosted Earth-observation scene API on STAC and pgstac."""

__version__ = "0.1.0"
