"""Stage shim (being moved)."""
from pipeline.train import add_arguments, main  # noqa: F401
