"""Volumes kept on disk while a model trains, so memory does not grow with the cohort.

A training sampler needs random crops of every training subject in every step. Instead of holding all
volumes in RAM, it writes each subject's prepared arrays (padded image, interpolation skip, candidate crop
centres) once into a `VolumeCache` - uncompressed ``.npy`` files in a private folder - and keeps only
`CachedArray` handles. Indexing a handle reads just the byte range of the indexed crop (one ``pread``;
nothing is memory-mapped, so no page of the file is counted in the process's resident memory); the
operating system's page cache keeps hot files fast. A volume sliced across its last axis is best stored in
Fortran order (``put(..., order="F")``): each slice is then one contiguous run of bytes. Subjects are read from their NIfTI files one at a
time (`LazyVolumes`), so at most one or two volumes are in memory while the cache is prepared.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np

from pipeline.io.atomic import atomic_path

log = logging.getLogger(__name__)

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CachedArray:
    """A read-only array in an uncompressed ``.npy`` file; indexing reads only what it indexes.

    Supports what the samplers use: ``.shape``, ``.dtype``, ``.ndim``, ``len()``, and indexing with
    integers and step-1 slices (any other index reads the whole array first). The array can be viewed as if
    zero-padded at the end of each axis (`padded`), without writing the zeros.
    """

    def __init__(self, path: str | Path, stored_shape: Sequence[int], dtype: np.dtype, offset: int,
                 fortran_order: bool = False, shape: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        self.stored_shape = tuple(int(n) for n in stored_shape)
        self.dtype = np.dtype(dtype)
        self.offset, self.fortran_order = int(offset), bool(fortran_order)
        self.shape = tuple(int(n) for n in (shape if shape is not None else stored_shape))
        # element strides of the stored layout
        self._strides, step = [0] * len(self.stored_shape), 1
        for a in (range(len(self.stored_shape)) if self.fortran_order else reversed(range(len(self.stored_shape)))):
            self._strides[a] = step
            step *= self.stored_shape[a]
        if len(self.shape) != len(self.stored_shape) or any(
                s < n for s, n in zip(self.shape, self.stored_shape, strict=True)):
            raise ValueError(f"{self.path}: shape {self.shape} cannot hold the stored {self.stored_shape}")

    @classmethod
    def open(cls, path: str | Path) -> CachedArray:
        """A handle on an existing ``.npy`` file (its header is read once, here)."""
        path = Path(path)
        with path.open("rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            except ValueError as err:
                raise ValueError(f"{path}: not a .npy array file ({err})") from err
            if dtype.hasobject:
                raise ValueError(f"{path}: object arrays cannot be memory-mapped")
            return cls(path, shape, dtype, fh.tell(), fortran)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        pad = "" if self.shape == self.stored_shape else f", stored {self.stored_shape}"
        return f"CachedArray({self.path.name}, shape {self.shape}{pad}, {self.dtype})"

    def padded(self, shape: Sequence[int]) -> CachedArray:
        """The same file seen zero-padded at the end of each axis up to `shape` (at least the stored shape)."""
        target = [max(int(s), n) for s, n in zip(shape, self.stored_shape, strict=True)]
        return CachedArray(self.path, self.stored_shape, self.dtype, self.offset, self.fortran_order, target)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        parts = _basic_index(key, self.shape)
        if parts is None:  # any other indexing: read everything, then index
            return np.ascontiguousarray(np.asarray(self)[key])
        take = None  # one 1-D integer array along an axis: read its bounding range, pick from it after
        for a, p in enumerate(parts):
            if isinstance(p, np.ndarray):
                lo = int(p.min()) if p.size else 0
                take = (sum(isinstance(q, slice) for q in parts[:a]), p - lo)
                parts[a] = slice(lo, int(p.max()) + 1 if p.size else 0)
        out = self._box(parts)
        if take is not None:
            out = np.ascontiguousarray(out[(slice(None),) * take[0] + (take[1],)])
        return out

    def _box(self, parts: Sequence[int | slice]) -> np.ndarray:
        """The (zero-padded) elements of one int or step-1 slice per axis."""
        out_shape = [p.stop - p.start for p in parts if isinstance(p, slice)]
        box, dst, empty = [], [], False  # the stored part, as (start, stop) per axis; where it goes in `out`
        for p, n in zip(parts, self.stored_shape, strict=True):
            if isinstance(p, int):
                empty |= p >= n  # an index into the padding
                box.append((p, p + 1))
                continue
            stop = min(p.stop, n)
            empty |= stop <= p.start
            box.append((p.start, stop))
            dst.append(slice(0, stop - p.start))
        if empty:
            return np.zeros(out_shape, dtype=self.dtype)
        crop = self._read(box).reshape([b - a for (a, b), p in zip(box, parts, strict=True)
                                        if isinstance(p, slice)])
        if list(crop.shape) == out_shape:
            return crop
        out = np.zeros(out_shape, dtype=self.dtype)
        out[tuple(dst)] = crop
        return out

    def _read(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """The stored elements in `box` ((start, stop) per axis), as a new C-ordered array of the box's shape.

        One ``pread`` of the byte range from the box's first to its last element (contiguous for a slice
        across the slowest axis), then a strided copy: no mapping, so no page of the file enters the
        process's resident memory.
        """
        strides = self._strides
        first = sum(a * s for (a, _), s in zip(box, strides, strict=True))
        last = sum((b - 1) * s for (_, b), s in zip(box, strides, strict=True))
        item = self.dtype.itemsize
        count = (last - first + 1) * item
        fd = os.open(self.path, os.O_RDONLY)
        try:
            buf = os.pread(fd, count, self.offset + first * item)
        finally:
            os.close(fd)
        if len(buf) != count:
            raise OSError(f"{self.path}: truncated cache file (read {len(buf)} of {count} bytes)")
        view = np.ndarray([b - a for a, b in box], dtype=self.dtype, buffer=buf,
                          strides=[s * item for s in strides])
        return view.copy(order="C")


def _basic_index(key: Any, shape: tuple[int, ...]) -> list[int | slice | np.ndarray] | None:
    """`key` as one non-negative int or step-1 slice per axis (or, with slices only beside it, a single 1-D
    integer array), or None if it is anything else."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for an array of {len(shape)} dimension(s)")
    key = key + (slice(None),) * (len(shape) - len(key))
    parts: list[int | slice | np.ndarray] = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
            parts.append(i)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1:
                return None
            parts.append(slice(start, max(stop, start)))
        elif isinstance(k, (np.ndarray, list)) and np.asarray(k).ndim == 1 and np.asarray(k).dtype.kind in "iu":
            idx = np.asarray(k, dtype=np.int64)
            if ((idx < -n) | (idx >= n)).any():
                raise IndexError(f"index out of bounds for an axis of size {n}")
            parts.append(np.where(idx < 0, idx + n, idx))
        else:
            return None
    n_arrays = sum(isinstance(p, np.ndarray) for p in parts)
    if n_arrays > 1 or (n_arrays and any(isinstance(p, int) for p in parts)):
        return None  # numpy's rules for several advanced indices: leave them to numpy
    return parts


class VolumeCache:
    """A private folder of `CachedArray` files, removed by `close` (or when the cache is garbage-collected
    or the interpreter exits).

    Args:
        parent: where the folder is made (created if missing; e.g. the model's output folder); None: the
            system's temporary folder (mind that it may live in RAM, e.g. tmpfs).
        prefix: the folder name's prefix.
    """

    def __init__(self, parent: str | Path | None = None, prefix: str = "volumes-") -> None:
        self.parent = Path(parent) if parent is not None else None
        if self.parent is not None:
            self.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir=self.parent))
        self.nbytes = 0
        self._finalizer = weakref.finalize(self, _remove, self.root, self.parent)

    def put(self, name: str, array: np.ndarray, order: str = "C") -> CachedArray:
        """Write `array` as `<name>.npy` (atomically; memory layout `order`, C or F) and return its handle."""
        if order not in ("C", "F"):
            raise ValueError(f"order must be C or F, got {order!r}")
        if not _NAME.match(name):
            raise ValueError(f"cache entry name {name!r}: use letters, digits, '.', '_' and '-'")
        if self.closed:
            raise RuntimeError(f"{self.root}: the cache is closed")
        path = self.root / f"{name}.npy"
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.save(fh, np.asfortranarray(array) if order == "F" else np.ascontiguousarray(array), allow_pickle=False)
        self.nbytes += path.stat().st_size
        return CachedArray.open(path)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Delete the folder and what it holds (its parent too, when left empty)."""
        if self._finalizer.alive:
            log.debug("removing the volume cache %s (%.1f MB)", self.root, self.nbytes / 2**20)
        self._finalizer()

    def __enter__(self) -> VolumeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pad_to(a: np.ndarray | CachedArray, shape: Sequence[int]) -> np.ndarray | CachedArray:
    """Zero-pad `a` at the end of each axis up to `shape` (no-op where already large enough; a cached
    array is only seen padded, nothing is written)."""
    pad = [(0, max(0, s - n)) for n, s in zip(a.shape, shape, strict=True)]
    if not any(p[1] for p in pad):
        return a
    return a.padded(shape) if isinstance(a, CachedArray) else np.pad(a, pad)


def _remove(root: Path, parent: Path | None) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if parent is not None:
        try:
            os.rmdir(parent)  # only when empty (another run's cache may be beside ours)
        except OSError:
            pass


class LazyVolumes(Sequence[T], Generic[T]):
    """A sequence of per-subject items read from disk on every access; nothing is kept in memory.

    ``names`` (e.g. subject IDs) are known without reading anything. Iterating reads one item at a time.
    """

    def __init__(self, names: Sequence[str], load: Callable[[int], T]) -> None:
        self.names = list(names)
        self._load = load

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._load(i) for i in range(*index.indices(len(self)))]
        i = int(index) + (len(self) if index < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} item(s)")
        return self._load(i)

    def __iter__(self) -> Iterator[T]:
        for i in range(len(self)):
            yield self._load(i)

    def __repr__(self) -> str:
        return f"LazyVolumes({len(self)} item(s))"
