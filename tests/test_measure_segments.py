"""measure_segments on a real tiny run: segments.json as the sweep reads it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from calex_steps.cascade.latency import HEAD_KINDS
from calex_steps.cascade.simulate import segment_times
from calex_steps.errors import CalexError
from calex_steps.stages.measure_segments import run_measure_segments

SETTINGS = {"batch_sizes": [16, 1], "warmup": 2, "timed": 16, "prototypes": 8}


def test_segments_json_is_what_the_sweep_reads(tiny_cascade_run, tmp_path):
    root = tiny_cascade_run["root"]
    out = tmp_path / "latency" / "segments.json"
    run_measure_segments(tiny_cascade_run["prepared"], root / "backbone.pt", root / "probe.pt",
                         root / "features.h5", SETTINGS, "cpu", out)  # fmt: skip
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["threads"] >= 1 and data["torch"]
    attach = ["layer1", "layer2", "layer3"]
    assert data["attach_points"] == attach and sorted(data["per_batch"]) == ["1", "16"]
    for batch in (1, 16):
        entry = data["per_batch"][str(batch)]
        assert sorted(entry["heads_ms"]) == sorted(HEAD_KINDS)
        parts = [*entry["segments_ms"], entry["tail_ms"], entry["backbone_ms"]]
        assert all(t > 0 for t in parts)
        for kind in HEAD_KINDS:
            times, backbone = segment_times(data, attach, batch, kind)
            assert backbone == entry["backbone_ms"]
            assert np.all(np.diff(times) > 0)  # a later exit pays every earlier part
            seg, heads = entry["segments_ms"], entry["heads_ms"][kind]
            np.testing.assert_allclose(times[0], seg[0] + heads[0])
            np.testing.assert_allclose(times[-1], sum(seg) + entry["tail_ms"] + sum(heads))


def test_the_study_head_kinds_are_timed(tiny_cascade_run, tmp_path):
    """settings["heads"] names the kinds of the study's recipes: each, and only they, is
    timed at every attach point (a +cascade kind reads the previous logits)."""
    root = tiny_cascade_run["root"]
    kinds = ["sdn", "pteenet_conv2", "msdnet", "ztw_cascading+cascade"]
    out = tmp_path / "segments.json"
    settings = SETTINGS | {"batch_sizes": [4], "heads": kinds}
    run_measure_segments(tiny_cascade_run["prepared"], root / "backbone.pt", root / "probe.pt",
                         root / "features.h5", settings, "cpu", out)  # fmt: skip
    heads = json.loads(out.read_text())["per_batch"]["4"]["heads_ms"]
    assert sorted(heads) == sorted(kinds)
    assert all(len(times) == 3 and min(times) > 0 for times in heads.values())


def test_bad_settings_are_one_clear_error(tiny_cascade_run, tmp_path):
    root = tiny_cascade_run["root"]
    with pytest.raises(CalexError, match="lacks \\['prototypes'\\]"):
        settings = {"batch_sizes": [1], "warmup": 1, "timed": 1}
        out = tmp_path / "s.json"
        run_measure_segments(tiny_cascade_run["prepared"], root / "backbone.pt", None,
                             root / "features.h5", settings, "cpu", out)  # fmt: skip
    assert not (tmp_path / "s.json").exists()


FAULTS_SCRIPT = """
import resource, sys
import numpy as np
from calex_steps.cli import keep_freed_memory
applied = keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a layer's activations (4 x 16 MiB), freed and allocated again
    blocks = [np.ones(4 * 1024 * 1024, dtype=np.float32) for _ in range(4)]
    del blocks
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not (sys.platform == "linux" and platform.libc_ver()[0] == "glibc"),
                    reason="keep_freed_memory tunes glibc's malloc only")  # fmt: skip
def test_freed_activation_memory_is_reused_not_faulted_in_again():
    """Every stage keeps freed blocks: a layer's 16 MiB activations cost their page faults
    once, not at each batch (the cause of segment times that did not add up to the backbone)."""

    def faults(keep: str) -> tuple[str, int]:
        env = {**os.environ, "CALEX_KEEP_FREED_MEMORY": keep}
        out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], env=env, check=True,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
        return out[0], int(out[1])

    applied, kept = faults("1")
    default_applied, default = faults("0")
    assert (applied, default_applied) == ("True", "False")
    # glibc's default faults the blocks in again at every round (at least once per round
    # even with transparent huge pages); kept, they are faulted in once
    assert default >= 20
    assert kept * 8 <= default
