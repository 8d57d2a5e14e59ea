"""Stage shim (being moved)."""
from pipeline.preprocess import add_arguments, main  # noqa: F401
