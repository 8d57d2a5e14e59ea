"""The report: figures (made by the evaluation stage) and the HTML assembly (stage 7, `build`)."""
