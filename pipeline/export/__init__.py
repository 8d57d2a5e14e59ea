"""Model outputs back into the hospital and into research pipelines.

- `dicom`: a model output (`results/infer/<output>/<subject>_<desc>.nii.gz`) as a new derived DICOM series
  (MR/CT image storage, one file per slice, DERIVED\\SECONDARY, marked synthetic), pseudonymised unless the user
  holds the pseudonym key and asks for re-identification (then linked to the source study and series);
- `bids`: the outputs as a BIDS derivatives dataset (`results/derivatives/medgan/`);
- (the MONAI bundle export may live here too);
- `provenance`: what both say about the model that made an image; `sources`: the source series and the key.
"""
