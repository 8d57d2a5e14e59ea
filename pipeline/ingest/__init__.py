"""Stage 2's library, ingestion (the stage: `pipeline.stages.ingest`; the call: `pipeline.ingest.run.ingest`).

Walks `input_dir` (DICOM in any nesting, NIfTI, BIDS), converts every usable scan to
`<out>/sub-NNN/sub-NNN_<modality>.nii.gz` (+ a JSON sidecar of technical fields), and writes
`<out>/manifest.tsv` (one row per input series or file, and per file left out of a series, ingested or skipped
with the reason), `<out>/files.tsv` (every input file: status, reason, its manifest row; both written with
`pipeline.io.tables`) and `<out>/pseudonym_key.tsv` (the only link to the original IDs); when nothing is usable,
`<out>/why_nothing.tsv`. Modules: `discover` (walk, header reads), `dicom_series` (grouping, classification,
which files make the series), `dicom_geometry` (slice geometry, the volume's affine), `dicom_pixels` (decoding,
stacking), `nifti_inputs`, `modality`, `pseudonym`, `volume`, `accounting` (rows <-> files, the log), `run`.
"""
