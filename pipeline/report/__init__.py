"""The report (stage 7): HTML assembly of what evaluation wrote (`build`), from the inputs it reads (`inputs`).

The figures are drawn by evaluation (`pipeline.evaluation.figures`); the report computes nothing.
"""
