"""The pixels of DICOM slices: decode each file (frame by frame when the whole file fails), stack a volume.

Decoding comes before a series is judged, so a file whose pixel data is truncated, corrupt or undecodable is
left out of its series (with its reason) instead of costing the whole series; a multi-frame file that fails as
a whole is decoded frame by frame and only the frames that fail are left out.
"""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.ingest.dicom_geometry import SliceRef
from pipeline.ingest.discover import DicomFile
from pipeline.ingest.volume import describe_error


def decode(f: DicomFile, refs: list[SliceRef]) -> list[str]:
    """Decode the slices `refs` of file `f` into their `pixels`; per slice, "" or why it cannot be read."""
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, pixel_array

    def unreadable(exc: BaseException) -> str:
        return f"pixel data unreadable ({describe_error(exc, f.path, f.root)})"

    try:
        ds = dcmread(f.path)
    except Exception as exc:  # a truncated or corrupt file
        return [unreadable(exc)] * len(refs)
    arrays: list[np.ndarray | str]
    try:
        if refs[0].frame is None:
            arr = ds.pixel_array
            if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
                arr = apply_modality_lut(arr, ds)
            arrays = [arr]
        else:
            frames = ds.pixel_array
            frames = frames[None] if frames.ndim == 2 else frames
            arrays = [frames[ref.frame] for ref in refs]
    except Exception as exc:  # truncated, corrupt or undecodable pixel data
        if refs[0].frame is None:
            return [unreadable(exc)]
        arrays = []
        for ref in refs:  # only the frames that fail are lost
            try:
                arrays.append(pixel_array(ds, index=ref.frame))
            except Exception as frame_exc:
                arrays.append(unreadable(frame_exc))
    problems = []
    for ref, arr in zip(refs, arrays, strict=True):
        if isinstance(arr, str):
            problems.append(arr)
        elif arr.shape != (ref.rows, ref.cols):
            problems.append(f"pixel data has shape {arr.shape}, expected ({ref.rows}, {ref.cols})")
        else:
            ref.pixels = arr
            problems.append("")
    return problems


def content_key(ref: SliceRef) -> tuple:
    """Position, geometry, rescale and a digest of the (decoded) pixels: equal for two copies of one slice."""
    pixels = np.ascontiguousarray(ref.pixels)
    digest = hashlib.blake2b(pixels.tobytes(), digest_size=16)
    digest.update(f"{pixels.dtype.str}{pixels.shape}".encode())
    return (tuple(ref.position), tuple(ref.orientation), tuple(ref.pixel_spacing), ref.rows, ref.cols,
            ref.slope, ref.intercept, digest.hexdigest())


def stack(refs: list[SliceRef]) -> np.ndarray:
    """Stack the decoded slices (already sorted) into (x, y, z) with the rescale slope/intercept applied.

    int32 when every slice's slope is 1 and intercept a whole number (values stay exact), float32 otherwise.
    """
    first = refs[0]
    integral = all(r.slope == 1.0 and float(r.intercept).is_integer() for r in refs)
    vol = np.empty((first.cols, first.rows, len(refs)), dtype=np.int32 if integral else np.float32)
    for k, ref in enumerate(refs):
        arr = ref.pixels
        if integral:
            arr = arr.astype(np.int32) + int(ref.intercept)
        elif ref.slope != 1.0 or ref.intercept != 0.0:
            arr = arr.astype(np.float64) * ref.slope + ref.intercept
        vol[:, :, k] = arr.T
    return vol
