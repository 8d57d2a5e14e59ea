"""Stage shim (being moved)."""
from pipeline.demo import add_arguments, main  # noqa: F401
