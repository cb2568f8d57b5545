# Stage 4: CPM calibration at every margin and the cascade on test (SPEC section 7),
# once per calibration/test split of the held-out samples (study.splits).


rule sweep_margins:
    input:
        features=FEATURES,
        branches=exit_signal_files,
        code=code("sweep_margins"),
    output:
        table=f"{SPLIT_PATTERN}/sweep.csv",
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
            {
                "margins": CFG["sweep"]["margins"],
                "calibration": CFG["recipes"][w.recipe]["calibration"],
                "split": int(w.split),
                "split_seed": dataset_cfg(w).get("split_seed", 0),
            }
        ),
    shell:
        "python -m calex_steps.stages.sweep_margins --features {input.features}"
        " --branches {input.branches} --settings {params.settings:q}"
        " --out-table {output.table} --out-thresholds {output.thresholds}"
        " --out-exits {output.exits} --out-per-class {output.per_class} > {log} 2>&1"
