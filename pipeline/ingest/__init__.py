"""Stage 2's library, ingestion (the stage: `pipeline.stages.ingest`; the call: `pipeline.ingest.run.ingest`).

Walks `input_dir` (DICOM in any nesting, NIfTI, BIDS), converts every usable scan to
`<out>/sub-NNN/sub-NNN_<modality>.nii.gz` (+ a JSON sidecar of technical fields), and writes
`<out>/manifest.tsv` (one row per input series or file, ingested or skipped with the reason; written with
`pipeline.io.tables`) and `<out>/pseudonym_key.tsv` (the only link to the original IDs). Modules: `discover`
(walk, header reads), `dicom_series` (grouping, geometry, pixels), `nifti_inputs`, `modality`, `pseudonym`,
`volume`, `run`.
"""
