"""Whole-volume inference, written once for every GAN family (stage 5: `pipeline.stages.infer`).

`scans` reads a NIfTI file or a DICOM series folder; `run` normalises it as the model file records, applies the
family's generator (`Family.apply`: sliding window, test-time augmentation, autocast through
`pipeline.nets.windows`), maps the output back to the input's units and writes it in the geometry the family
gives (`Family.output_affine`).
"""
