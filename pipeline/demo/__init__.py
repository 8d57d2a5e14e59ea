"""Stage 1's library: the embedded demo cohort, simulated offline from a real brain template.

`pipeline.demo.cohort.generate_demo(cfg, out)` (the stage: `python -m pipeline demo --params JSON --out DIR`)
writes an `input_dir` for the workflow:

- `DIR/dicom/...`: the first `n_dicom` subjects as DICOM series (one file per slice; several folder layouts,
  sagittal, coronal, reversed and oblique series, made-up patient identifiers such as "DEMO^ALICE" that the
  ingest stage strips);
- `DIR/bids/`: the others as a BIDS dataset (`sub-demoNN/anat/sub-demoNN_{T1w,T2w,PDw}.nii.gz`, no identifiers);
- `DIR/participants.tsv`, written last (the rule's output): subject label, format, path, sex, age.

Modules: `simulate` (template, tissue model and MR physics, one subject's images), `write` (DICOM and BIDS
writers, fake identities), `cohort` (the whole cohort, atomically). Deterministic: subject `i` draws everything
from `numpy.random.default_rng([seed, i])` and DICOM UIDs derive from the seed, so the same config gives
byte-identical voxels and UIDs.
"""
