"""Stage shim (being moved)."""
from pipeline.report.build import add_arguments, main  # noqa: F401
