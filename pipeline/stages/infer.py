"""Stage shim (being moved)."""
from pipeline.infer import add_arguments, main  # noqa: F401
