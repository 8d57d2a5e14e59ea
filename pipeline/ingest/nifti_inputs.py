"""NIfTI files (stand-alone or in a BIDS dataset) -> subject, modality and a clean 3D volume.

- BIDS (`sub-<label>[_<key>-<value>...]_<suffix>.nii[.gz]`): subject = the label, modality = the suffix
  (`T1w`, `T2w`, `PDw`, `FLAIR`, `CT`, or a modality named in ingest.modality_patterns); files under
  `derivatives/` are skipped.
- Other names: modality from a file-name token (`t1`, `T2w`, `pd`, `flair`, `ct`, ...), else from
  ingest.modality_patterns searched in the name; subject = the folder plus the name without that token
  (`scans/p01_t1.nii.gz` and `scans/p01_t2.nii.gz` are subject `scans/p01`; `p01/t1.nii` is `p01`).
- Voxels are re-written through `save_nifti`, so nothing of the original header but geometry survives
  (descrip, aux_file, intent_name and extensions are dropped). NaN/Inf voxels become 0 (noted); 4D files
  with more than one volume, 2D images and complex/RGB data are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.ingest.modality import CT, ModalityMatcher
from pipeline.ingest.pseudonym import SubjectKey
from pipeline.ingest.volume import SkipInput, Volume

BIDS_NAME = re.compile(
    r"^sub-(?P<label>[A-Za-z0-9]+)(?P<entities>(?:_[A-Za-z]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)$"
)
_SEPARATORS = re.compile(r"[_\-.\s]+")


def nifti_stem(name: str) -> str:
    """File name without .nii / .nii.gz."""
    low = name.lower()
    return name[: -len(".nii.gz")] if low.endswith(".nii.gz") else name[: -len(".nii")]


def identify(rel: str, matcher: ModalityMatcher) -> tuple[SubjectKey, str]:
    """(original subject, modality) of the NIfTI file at `rel` (relative to input_dir), or SkipInput."""
    path = PurePosixPath(rel)
    if "derivatives" in path.parts[:-1]:
        raise SkipInput("BIDS derivative (derivatives/ holds processed data, not scans)")
    stem = nifti_stem(path.name)
    bids = BIDS_NAME.match(stem)
    if bids:
        modality = matcher.from_token(bids["suffix"])
        if modality is None:
            known = ", ".join(sorted({*matcher.modalities, CT}))  # the suffix itself is in `source`, not here
            raise SkipInput(f"BIDS suffix (the name's last part) is not an ingested modality ({known})")
        return ("bids", bids["label"]), modality
    tokens = [t for t in _SEPARATORS.split(stem) if t]
    modality, rest = None, stem
    for i, token in enumerate(tokens):
        modality = matcher.from_token(token)
        if modality:
            rest = "_".join(tokens[:i] + tokens[i + 1 :])
            break
    else:
        found = matcher.match([stem])
        if found is None:
            raise SkipInput("modality not recognised from the file name (no modality token or pattern in it)")
        modality, match, _ = found
        rest = "_".join(t for t in _SEPARATORS.split(stem[: match.start()] + " " + stem[match.end() :]) if t)
    folder = path.parent.as_posix()
    parts = [p for p in (folder if folder != "." else "", rest) if p]
    return ("nifti", "/".join(parts) or stem), modality


def load_nifti_volume(path: Path, min_slices: int) -> Volume:
    """Read a NIfTI file as one 3D float volume with its affine, or raise SkipInput."""
    import nibabel as nib

    img = nib.load(str(path))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise SkipInput(f"not a NIfTI-1/2 image ({type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1 or len(shape) == 5 and shape[3:] == (1, 1):
        shape = shape[:3]
    if len(shape) != 3:
        extra = f" with {int(np.prod(shape[3:]))} volumes" if len(shape) > 3 else ""
        raise SkipInput(f"{len(shape)}D image{extra} (shape {'x'.join(map(str, img.shape))}); only 3D volumes are ingested")
    if min(shape) < min_slices:
        raise SkipInput(f"shape {'x'.join(map(str, shape))}: not a volume (ingest.min_slices = {min_slices})")
    on_disk = img.get_data_dtype()
    if on_disk.names is not None or np.issubdtype(on_disk, np.complexfloating):
        raise SkipInput(f"data type {on_disk} (RGB or complex) is not a grey-scale scan")
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    affine = img.affine
    notes = []
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise SkipInput("affine is not invertible or not finite")
    header = img.header
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        notes.append("no orientation in the header (qform and sform codes 0): nibabel's default affine used")
    bad = ~np.isfinite(data)
    if bad.any():
        notes.append(f"{int(bad.sum())} NaN/Inf voxel(s) replaced by 0")
        data[bad] = 0
    meta = {"source_format": "NIfTI"}
    return Volume(data, affine, notes, meta)
