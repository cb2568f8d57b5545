"""Reading an attach point of ``features.h5`` row by row, with memory bounded by the batch.

A training job asks for the rows of one batch at a time (``rows[idx]``) and an
output pass for consecutive blocks (``rows[start:stop]``). Whatever dtype the
cache stores (float32, or a compact float16), every read comes back as a
float32 array converted block by block, so the job never holds more than one
batch in the stored dtype.

Where the rows come from is decided once per split (:func:`open_rows`):

- ``memory``: the whole split as float32 in RAM, read once per job in slices,
  when it fits in the caller's budget (``memory_mb``);
- ``pread``: the split stays on disk; each batch reads its rows straight from
  the file at their byte offsets (uncompressed contiguous or row-chunked
  datasets: one positioned read per row, served by the OS page cache);
- ``hdf5``: a compressed or oddly chunked dataset, read through h5py with sorted
  indices (slow, but still bounded by the batch).
"""

from __future__ import annotations

import math
import os

import h5py
import numpy as np

from calex_steps.errors import CalexError

READ_BLOCK = 1024  # rows per slice when a split is loaded or converted block by block


def _filtered(ds: h5py.Dataset) -> bool:
    """Whether the dataset's chunks pass through a filter (compression, shuffle, ...)."""
    return ds.id.get_create_plist().get_nfilters() > 0


def _row_offsets(ds: h5py.Dataset) -> tuple[np.ndarray, int] | None:
    """(byte offset of each chunk, rows per chunk), or None when rows are not plain bytes."""
    if _filtered(ds) or ds.dtype.byteorder not in ("=", "<", "|"):
        return None
    if ds.chunks is None:
        offset = ds.id.get_offset()
        return None if offset is None else (np.array([offset], dtype=np.int64), max(len(ds), 1))
    if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None  # chunks cut through a row: a row is not one run of bytes
    rows = int(ds.chunks[0])
    count = math.ceil(len(ds) / rows)
    offsets = []
    for i in range(count):
        info = ds.id.get_chunk_info_by_coord((i * rows,) + (0,) * (ds.ndim - 1))
        if info.byte_offset is None:
            return None  # a chunk never written: let HDF5 fill it
        offsets.append(info.byte_offset)
    return np.asarray(offsets, dtype=np.int64), rows


class CacheRows:
    """The float32 rows of one ``{split}/feat{l}`` dataset; index with a LongTensor or a slice.

    ``rows[idx]`` -> float32 array (len(idx), *row_shape); ``len(rows)`` = N;
    ``rows.mode`` says where the rows come from (``memory``, ``pread`` or ``hdf5``).
    """

    def __init__(self, path: str | os.PathLike, ds: h5py.Dataset, memory_mb: float) -> None:
        self.path = str(path)
        self.shape = tuple(int(s) for s in ds.shape)
        self._dtype = ds.dtype
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
        float32_mb = self.shape[0] * int(np.prod(self.shape[1:], dtype=np.int64)) * 4 / 2**20
        self._ram = None
        self._ds = ds  # consecutive blocks are read through h5py (one hyperslab each)
        self._fd = None
        if float32_mb <= memory_mb:
            self.mode = "memory"
            self._ram = np.empty(self.shape, dtype=np.float32)
            for start in range(0, self.shape[0], READ_BLOCK):
                self._ram[start : start + READ_BLOCK] = ds[start : start + READ_BLOCK]
            return
        layout = _row_offsets(ds)
        if layout is not None:
            self.mode = "pread"
            self._offsets, self._chunk_rows = layout
            self._fd = os.open(self.path, os.O_RDONLY)
        else:
            self.mode = "hdf5"

    def __len__(self) -> int:
        return self.shape[0]

    def _as_float32(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=np.float32)

    def _pread(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` in the stored dtype, one positioned read per row."""
        buf = bytearray(len(idx) * self._row_bytes)
        view, size = memoryview(buf), self._row_bytes
        chunk, within = np.divmod(idx, self._chunk_rows)
        starts = (self._offsets[chunk] + within * size).tolist()
        for j, offset in enumerate(starts):
            got = os.preadv(self._fd, [view[j * size : (j + 1) * size]], offset)
            if got != size:
                raise CalexError(f"'{self.path}' ended early: rerun the cache_features rule")
        return np.frombuffer(buf, dtype=self._dtype).reshape(len(idx), *self.shape[1:])

    def _hdf5(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` through h5py, which needs sorted unique indices."""
        unique, inverse = np.unique(idx, return_inverse=True)
        return self._ds[unique][inverse]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise ValueError("feature rows are sliced with step 1 only")
            if self._ram is not None:
                return self._ram[start:stop]
            return self._as_float32(self._ds[start:stop])
        idx = np.asarray(key, dtype=np.int64)  # a CPU LongTensor converts without a copy
        if self._ram is not None:
            return self._ram[idx]
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        raw = self._pread(idx) if self._fd is not None else self._hdf5(idx)
        return self._as_float32(raw)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()
