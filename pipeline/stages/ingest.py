"""Stage shim (being moved)."""
from pipeline.ingest import add_arguments, main  # noqa: F401
