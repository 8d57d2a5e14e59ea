"""The workflow's stages, one thin module each: `add_arguments(parser)` and `main(args) -> int`.

A stage parses its arguments and calls into the library; no library module imports a stage.
"""
