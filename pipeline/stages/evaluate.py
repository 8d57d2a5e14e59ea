"""Stage shim (being moved)."""
from pipeline.evaluate import add_arguments, main  # noqa: F401
