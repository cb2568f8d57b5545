# Stage 4: calibration at every margin of the frontier grid and the cascade on test
# (docs/method.md#calibration, docs/calibration.md), once per calibration/test split (study.splits).
# A recipe with branches_from sweeps another recipe's branch files; split k of a dataset
# that retrains per split reads the files of its derived dataset `<key>-split<k>`.
# The latency reduction (lr) is predicted from the measured segment times (measure_segments).


rule sweep_margins:
    input:
        features=sweep_features,
        branches=exit_signal_files,
        segments=segments_file,
        code=code("sweep_margins"),
    output:
        table=f"{SPLIT_PATTERN}/sweep.csv",
        frontier=f"{SPLIT_PATTERN}/frontier.csv",
        thresholds=f"{SPLIT_PATTERN}/thresholds.npz",
        exits=f"{SPLIT_PATTERN}/exits.npz",
        per_class=f"{SPLIT_PATTERN}/per_class_exits.csv",
    log:
        "logs/sweep_margins/{dataset}/{backbone}/{recipe}/seed{seed}/split{split}.log",
    benchmark:
        "benchmarks/sweep_margins/{dataset}/{backbone}/{recipe}/seed{seed}/split{split}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        settings=lambda w: as_json(
            sweep_settings(CFG, w.recipe, w.dataset, int(w.split))
        ),
    shell:
        "python -m calex_steps.stages.sweep_margins --features {input.features}"
        " --branches {input.branches} --settings {params.settings:q}"
        " --segments {input.segments}"
        " --out-table {output.table} --out-frontier {output.frontier}"
        " --out-thresholds {output.thresholds} --out-exits {output.exits}"
        " --out-per-class {output.per_class} > {log} 2>&1"
