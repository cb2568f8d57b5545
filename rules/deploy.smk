# Stage 6: the cascade as a real model (SPEC section 11): export one operating
# point as TorchScript, and time every recipe against the plain backbone.
# Settings: the `latency` block (warmup, timed, batch_sizes) and `deploy.margin`.


rule export_cascade:
    input:
        backbone=BACKBONE,
        probe=probe_input,
        features=FEATURES,
        prepared=PREPARED,
        heads=lambda w: per_branch(run_dir(w), "branch", num_branches(w.backbone), "pt"),
        thresholds=f"{RUN_PATTERN}/split0/thresholds.npz",
        code=code("export_cascade"),
    output:
        f"{RUN_PATTERN}/cascade_m{{margin}}.pt",
    log:
        "logs/export_cascade/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.log",
    benchmark:
        "benchmarks/export_cascade/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.tsv"
    wildcard_constraints:
        margin="[0-9.]+",
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        run=run_dir,
        probe=lambda w, input: f"--probe {input.probe}" if input.probe else "",
    shell:
        "python -m calex_steps.stages.export_cascade --run-dir {params.run}"
        " --backbone {input.backbone} {params.probe} --features {input.features}"
        " --thresholds {input.thresholds}"
        " --margin {wildcards.margin} --class-names-from {input.prepared}"
        " --out {output} > {log} 2>&1"


rule measure_latency:
    input:
        prepared=PREPARED,
        backbone=BACKBONE,
        probe=probe_input,
        features=FEATURES,
        runs=latency_inputs,
        code=code("measure_latency"),
    output:
        table=f"{BACKBONE_DIR}/latency/latency.csv",
        at_fr=f"{BACKBONE_DIR}/latency/latency_at_fr.csv",
        crossover=f"{BACKBONE_DIR}/latency/crossover.csv",
    log:
        "logs/measure_latency/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/measure_latency/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 2  # timing on the CPU: nothing else runs beside it on a 2-core machine
    resources:
        gpu=gpu,
        mem_mb=6000,
        runtime=lambda w: 30 + 10 * len(latency_runs(w)),
    params:
        runs=latency_runs,
        margins=" ".join(str(m) for m in CFG["sweep"]["margins"]),
        batch_sizes=" ".join(str(b) for b in CFG["latency"]["batch_sizes"]),
        warmup=CFG["latency"]["warmup"],
        timed=CFG["latency"]["timed"],
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.measure_latency --prepared {input.prepared}"
        " --runs {params.runs} --margins {params.margins} --batch-sizes {params.batch_sizes}"
        " --warmup {params.warmup} --timed {params.timed} --device {params.device}"
        " --threads {threads} --out-table {output.table} --out-at-fr {output.at_fr}"
        " --out-crossover {output.crossover} > {log} 2>&1"
