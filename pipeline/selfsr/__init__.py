"""Self-supervised through-plane super-resolution (SMORE/ECLARE-style) of a single anisotropic scan.

`profile` (the slice profile as a linear operator, re-slicing and exact data consistency), `train` (training
pairs from the scan's own in-plane slices, the network, its training and its through-plane application),
`run` (geometry, the whole scan, reading and writing). The stage `python -m pipeline selfsr` calls `run.selfsr_scan`.
"""
