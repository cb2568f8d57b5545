# Stage 6: the cascade as a real model (docs/deploy.md): time the
# backbone's segments and the heads (the latency cost axis of the sweeps), export one
# operating point as TorchScript, and time one operating point per recipe.
# Settings: the `latency` block, `deploy.margin` and training.prototypes.
rule measure_segments:
    input:
        prepared=PREPARED,
        backbone=BACKBONE,
        probe=probe_input,
        features=FEATURES,
        code=code("measure_segments"),
    output:
        f"{BACKBONE_DIR}/latency/segments.json",
    log:
        "logs/measure_segments/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/measure_segments/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 2  # timing on the CPU: nothing else runs beside it on a 2-core machine
    resources:
        gpu=gpu,
        mem_mb=4000,
        runtime=30,
    params:
        settings=as_json(segment_settings()),
        probe=lambda w, input: f"--probe {input.probe}" if input.probe else "",
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.measure_segments --prepared {input.prepared}"
        " --backbone {input.backbone} {params.probe} --features {input.features}"
        " --settings {params.settings:q} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule export_cascade:
    input:
        backbone=BACKBONE,
        probe=probe_input,
        features=FEATURES,
        prepared=PREPARED,
        heads=lambda w: cascade_files(w.dataset, w.backbone, w.recipe, w.seed)["heads"],
        ensembles=lambda w: cascade_files(w.dataset, w.backbone, w.recipe, w.seed)[
            "ensembles"
        ],
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
        ensembles=lambda w, input: (
            f"--ensembles {input.ensembles}" if input.ensembles else ""
        ),
        signal=lambda w: CFG["recipes"][w.recipe]["exit_signal"],
    shell:
        "python -m calex_steps.stages.export_cascade --run-dir {params.run}"
        " --backbone {input.backbone} {params.probe} --features {input.features}"
        " --thresholds {input.thresholds} --branches {input.heads} {params.ensembles}"
        " --exit-signal {params.signal} --margin {wildcards.margin}"
        " --class-names-from {input.prepared} --out {output} > {log} 2>&1"


rule measure_latency:
    input:
        prepared=PREPARED,
        backbone=BACKBONE,
        probe=probe_input,
        features=FEATURES,
        segments=segments_file,
        runs=latency_inputs,
        code=code("measure_latency"),
    output:
        table=f"{BACKBONE_DIR}/latency/latency.csv",
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
        runtime=lambda w: 30 + 5 * len(STUDY["recipes"]),
    params:
        plan=lambda w: as_json({"recipes": latency_plan(w)}),
        latency={k: CFG["latency"][k] for k in ("fr", *LATENCY_KEYS)},
        batch_sizes=" ".join(str(b) for b in CFG["latency"]["batch_sizes"]),
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.measure_latency --prepared {input.prepared}"
        " --plan {params.plan:q} --fr {params.latency[fr]}"
        " --batch-sizes {params.batch_sizes} --warmup {params.latency[warmup]}"
        " --timed {params.latency[timed]} --segments {input.segments}"
        " --device {params.device} --threads {threads} --out-table {output.table}"
        " --out-crossover {output.crossover} > {log} 2>&1"
