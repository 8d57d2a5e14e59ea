"""Stage 3's library, preprocessing: `pipeline.preprocessing.run.preprocess(manifest, out_dir, cfg, seed,
pseudonym_key=None)`.

Per subject (`subject`): every ingested scan is loaded and reoriented to RAS (MONAI `LoadImage` + `Orientation`);
the reference scan (the first of `reference_modalities` the subject has) is resampled to `spacing` (MONAI
`Spacing`) and every other modality onto exactly that grid (MONAI `ResampleToMatch`), so images of one subject
overlay voxel for voxel. A foreground mask is made on the reference scan; intensities are normalised to [0, 1]
(`pipeline.imaging.intensity`; MR: clipped to percentiles of the foreground; CT: clipped to an HU window) and the
parameters recorded in `normalisation.json` so outputs can be mapped back (`original = low + value * (high - low)`).
The grid is then padded (MONAI `DivisiblePad`, value 0 = background) so the super-resolution axes are divisible by
the scale, and the low-resolution inputs are made with `pipeline.imaging.degrade` and written with their own affine
(`pipeline.imaging.degrade.lr_affine`). Subjects are split into train/val/test at subject level (`split`: seeded;
every split with a share > 0 gets a subject, too few subjects is an error), an optional TSV pinning some of them by
pseudonym or by the user's own IDs through ingest's pseudonym key (`overrides`). `subjects.tsv` is written last
(`run`).

Outputs under `out_dir`: `sub-NNN/<modality>.nii.gz` (float32 in [0, 1]), `sub-NNN/mask.nii.gz` (uint8),
`sub-NNN/<modality>_lr.nii.gz`, `sub-NNN/normalisation.json`, and `subjects.tsv` with columns
`subject split <one per modality> mask <modality>_lr ...` (paths relative to the working directory, empty where
a subject lacks the image). `pipeline.io.tables.read_subjects()` reads it back with the paths resolved.
"""
