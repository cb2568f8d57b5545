"""The embedded synthetic set: a hierarchical, deterministic learning problem (docs/method.md#data).

Each coarse class owns a palette (background colour, shape colour, and a
sinusoidal grating with its own orientation and frequency): a local cue that
even a bag of early features can read. Each fine class owns a global layout
(three identical blobs in distinct cells of a 4×4 grid), unique over all fine
classes, so the layout alone also identifies the coarse class, but only a
network that relates distant positions can read it. A per-sample difficulty
d in [0, 1] blends the palette towards another coarse class (at d = 1 the
colour cue points the wrong way), lowers the shapes' contrast, adds noise and
widens the random translation of the layout.
"""

from __future__ import annotations

import numpy as np

from calex_steps.data.prepared import SPLITS
from calex_steps.errors import CalexError

SYNTHETIC_DEFAULTS = {
    "n_train": 4000,
    "n_val": 2000,
    "n_test": 2000,
    "num_coarse": 8,
    "fine_per_coarse": 3,
    "seed": 0,
}

_SIZE = 32
_GRID = 4  # layout cells per side (8 px each)
_BLOBS = 3  # blobs per layout
_BLOB_SIGMA = 2.4  # px
_BLEND_MAX = 0.8  # palette blend towards another class at d = 1
_SHIFT_MAX = 5  # extra layout translation (px) at d = 1
_CONTRAST_DROP = 0.4  # blob contrast lost at d = 1
_TEXTURE_AMP = 0.2  # grating amplitude relative to the background colour
_NOISE_MIN, _NOISE_GAIN = 0.03, 0.16  # pixel noise std (in [0, 1] units) = min + gain * d
_DIFFICULTY_BETA = (1.2, 1.2)


def _layouts(rng: np.random.Generator, n_fine: int) -> np.ndarray:
    """Draw ``n_fine`` distinct blob layouts as cell indices, shape (n_fine, _BLOBS).

    A layout is rejected if it or its horizontal mirror equals one already
    drawn, so horizontal-flip augmentation never merges two classes.
    """
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []
    while len(out) < n_fine:
        cells = tuple(sorted(rng.choice(_GRID * _GRID, size=_BLOBS, replace=False).tolist()))
        mirror = tuple(
            sorted(r * _GRID + (_GRID - 1 - c) for r, c in (divmod(x, _GRID) for x in cells))
        )
        if cells in seen or mirror in seen:
            continue
        seen.update({cells, mirror})
        out.append(cells)
    return np.array(out, dtype=np.int64)


def _templates(seed_seq: np.random.SeedSequence, num_coarse: int, n_fine: int) -> dict:
    """Class templates: per-coarse palettes and per-fine layouts."""
    rng = np.random.default_rng(seed_seq)
    bg = rng.uniform(0.15, 0.85, size=(num_coarse, 3))
    return {
        "bg": bg.astype(np.float32),
        # shapes contrast with their background: the colour opposite in RGB, pushed apart
        "fg": np.clip(1 - bg + rng.uniform(-0.15, 0.15, size=bg.shape), 0.05, 0.95).astype(
            np.float32
        ),
        # grating orientations spread over [0, pi) with a random offset per class
        "theta": (np.arange(num_coarse) + rng.uniform(0, 0.5, num_coarse)) * np.pi / num_coarse,
        "omega": rng.uniform(0.5, 1.4, size=num_coarse),  # rad per px
        "layouts": _layouts(rng, n_fine),
    }


def _render(tpl: dict, fine: np.ndarray, coarse: np.ndarray, rng: np.random.Generator):
    """Render one split; returns (uint8 images N×32×32×3, float32 difficulty N)."""
    n, num_coarse = len(fine), len(tpl["bg"])
    d = rng.beta(*_DIFFICULTY_BETA, size=n).astype(np.float32)
    other = (coarse + rng.integers(1, num_coarse, size=n)) % num_coarse
    alpha = (_BLEND_MAX * d)[:, None]  # N×1
    bg = (1 - alpha) * tpl["bg"][coarse] + alpha * tpl["bg"][other]  # N×3
    fg = (1 - alpha) * tpl["fg"][coarse] + alpha * tpl["fg"][other]  # N×3
    pos = np.arange(_SIZE, dtype=np.float32)  # 32

    def grating(k: np.ndarray, phase: np.ndarray) -> np.ndarray:  # N×32×32
        th, om = tpl["theta"][k], tpl["omega"][k]  # N
        gx = (om * np.cos(th))[:, None, None] * pos[None, None, :]
        gy = (om * np.sin(th))[:, None, None] * pos[None, :, None]
        return np.sin(gx + gy + phase[:, None, None]).astype(np.float32)

    phase = rng.uniform(0, 2 * np.pi, size=n)
    a3 = alpha[:, :, None]
    texture = (1 - a3) * grating(coarse, phase) + a3 * grating(other, phase)  # N×32×32
    # blob centres: cell centres plus a per-sample shift that grows with difficulty
    cells = tpl["layouts"][fine]  # N×B
    half = _SIZE / (2 * _GRID)
    reach = np.rint(1 + _SHIFT_MAX * d)[:, None]  # N×1, px
    cy = (cells // _GRID) * 2 * half + half + rng.uniform(-1, 1, size=(n, 1)) * reach
    cx = (cells % _GRID) * 2 * half + half + rng.uniform(-1, 1, size=(n, 1)) * reach
    mask = np.zeros((n, _SIZE, _SIZE), dtype=np.float32)
    for b in range(cells.shape[1]):  # separable Gaussians, flattened on top into discs
        gy = np.exp(-((pos[None] - cy[:, b : b + 1]) ** 2) / (2 * _BLOB_SIGMA**2))  # N×32
        gx = np.exp(-((pos[None] - cx[:, b : b + 1]) ** 2) / (2 * _BLOB_SIGMA**2))  # N×32
        np.maximum(mask, gy[:, :, None] * gx[:, None, :], out=mask)
    mask = np.minimum(1.0, 1.8 * mask) * (1 - _CONTRAST_DROP * d)[:, None, None]
    base = bg[:, None, None, :] * (1 + _TEXTURE_AMP * texture[..., None])  # N×32×32×3
    img = base * (1 - mask[..., None]) + fg[:, None, None, :] * mask[..., None]
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    img += noise * (_NOISE_MIN + _NOISE_GAIN * d)[:, None, None, None]
    images = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return images, d


def make_synthetic(
    n_train: int, n_val: int, n_test: int, num_coarse: int, fine_per_coarse: int, seed: int
) -> tuple[dict[str, dict[str, np.ndarray]], list[str], list[str]]:
    """Generate the hierarchical synthetic set.

    Returns ``(splits, class_names, fine_class_names)``; ``splits[split]`` has
    ``images`` uint8 N×32×32×3, ``labels`` (coarse) int64, ``fine_labels``
    int64 (fine class ``c * fine_per_coarse + j`` belongs to coarse class
    ``c``), ``index`` int64 and ``difficulty`` float32 in [0, 1]. Each split
    has its own random stream, so changing one split's size leaves the others
    unchanged; the same arguments always give byte-identical arrays.
    """
    if num_coarse < 2 or fine_per_coarse < 1:
        raise CalexError("synthetic settings need num_coarse >= 2 and fine_per_coarse >= 1")
    n_fine = num_coarse * fine_per_coarse
    if n_fine > 200:
        raise CalexError(
            "synthetic settings allow at most 200 fine classes (num_coarse * fine_per_coarse)"
        )
    tpl_seq, *split_seqs = np.random.SeedSequence(seed).spawn(1 + len(SPLITS))
    tpl = _templates(tpl_seq, num_coarse, n_fine)
    splits = {}
    for split, n, seq in zip(SPLITS, (n_train, n_val, n_test), split_seqs, strict=True):
        if n < 1:
            raise CalexError(f"synthetic setting n_{split} must be >= 1 (got {n})")
        rng = np.random.default_rng(seq)
        fine = rng.permutation(np.arange(n) % n_fine).astype(np.int64)  # balanced
        coarse = fine // fine_per_coarse
        images, difficulty = _render(tpl, fine, coarse, rng)
        splits[split] = {
            "images": images,
            "labels": coarse,
            "fine_labels": fine,
            "index": np.arange(n, dtype=np.int64),
            "difficulty": difficulty,
        }
    names = [f"coarse{c:02d}" for c in range(num_coarse)]
    fine_names = [
        f"coarse{c:02d}_fine{j}" for c in range(num_coarse) for j in range(fine_per_coarse)
    ]
    return splits, names, fine_names
