"""calex_steps.data.cache_rows: every way of reading feature rows returns the same float32 rows."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from calex_steps.data.cache_rows import CacheRows

LAYOUTS = {
    "contiguous": {},
    "row_chunks": {"chunks": (64, 6, 2, 2)},
    "ragged_last_chunk": {"chunks": (300, 6, 2, 2)},
    "compressed": {"chunks": (64, 6, 2, 2), "compression": "gzip", "shuffle": True},
    "chunks_cut_rows": {"chunks": (64, 3, 2, 2)},
}


@pytest.mark.parametrize("dtype", ["f4", "f2"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_rows_match_the_stored_values_in_every_mode(tmp_path, layout, dtype):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1000, 6, 2, 2)).astype(dtype)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=values, **LAYOUTS[layout])
    expected_mode = {"contiguous": "pread", "row_chunks": "pread", "ragged_last_chunk": "pread"}
    idx = rng.permutation(1000)[:257]
    with h5py.File(path, "r") as f:
        for budget, mode in ((1e9, "memory"), (0.0, expected_mode.get(layout, "hdf5"))):
            rows = CacheRows(path, f["x"], budget)
            assert rows.mode == mode and len(rows) == 1000
            got = rows[idx]
            assert got.dtype == np.float32 and got.shape == (257, 6, 2, 2)
            assert np.array_equal(got, values[idx].astype(np.float32))
            assert np.array_equal(rows[990:1005], values[990:].astype(np.float32))
            assert np.array_equal(rows[[5, 5, 1]], values[[5, 5, 1]].astype(np.float32))
            with pytest.raises(IndexError):
                rows[[1000]]
            rows.close()
