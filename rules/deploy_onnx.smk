# The cascade outside PyTorch (docs/deploy.md): one operating point as an ONNX graph that
# does the early exit itself, checked image by image against the simulator, its INT8
# variant with recalibrated thresholds, and the latency axis timed in ONNX Runtime.
# Needs the deploy extra (pip install -e '.[deploy]'); no rule of the default target
# reads these outputs unless latency.lr_runtime is onnx. Targets: onnx_exports, onnx_all.
ONNX_PATTERN = f"{RUN_PATTERN}/cascade_m{{margin}}"


rule export_onnx:
    input:
        unpack(cascade_inputs),
        code=code("export_onnx"),
    output:
        model=f"{ONNX_PATTERN}.onnx",
        meta=f"{ONNX_PATTERN}.json",
    log:
        "logs/export_onnx/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.log",
    benchmark:
        "benchmarks/export_onnx/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.tsv"
    wildcard_constraints:
        margin="[0-9.]+",
    conda:
        "../envs/deploy.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        args=cascade_args,
    shell:
        "python -m calex_steps.stages.export_onnx {params.args}"
        " --margin {wildcards.margin} --prepared {input.prepared} --threads {threads}"
        " --out {output.model} --out-meta {output.meta} > {log} 2>&1"


rule check_onnx:
    input:
        model=f"{ONNX_PATTERN}.onnx",
        exits=f"{RUN_PATTERN}/split0/exits.npz",
        prepared=PREPARED,
        code=code("check_onnx"),
    output:
        f"{ONNX_PATTERN}_check.json",
    log:
        "logs/check_onnx/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.log",
    benchmark:
        "benchmarks/check_onnx/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.tsv"
    wildcard_constraints:
        margin="[0-9.]+",
    conda:
        "../envs/deploy.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        tolerance=CFG["deploy"]["onnx_tolerance"],
    shell:
        "python -m calex_steps.stages.check_onnx --model {input.model}"
        " --exits {input.exits} --prepared {input.prepared}"
        " --tolerance {params.tolerance} --threads {threads} --out {output} > {log} 2>&1"


rule quantize_onnx:
    input:
        unpack(cascade_inputs),
        code=code("quantize_onnx"),
    output:
        model=f"{ONNX_PATTERN}_int8.onnx",
        meta=f"{ONNX_PATTERN}_int8.json",
    log:
        "logs/quantize_onnx/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.log",
    benchmark:
        "benchmarks/quantize_onnx/{dataset}/{backbone}/{recipe}/seed{seed}/m{margin}.tsv"
    wildcard_constraints:
        margin="[0-9.]+",
    conda:
        "../envs/deploy.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        args=cascade_args,
        settings=lambda w: as_json(int8_settings(w.recipe, w.dataset)),
    shell:
        "python -m calex_steps.stages.quantize_onnx {params.args}"
        " --margin {wildcards.margin} --prepared {input.prepared}"
        " --settings {params.settings:q} --threads {threads}"
        " --out {output.model} --out-meta {output.meta} > {log} 2>&1"


rule measure_segments_onnx:
    input:
        prepared=PREPARED,
        backbone=BACKBONE,
        probe=probe_input,
        features=FEATURES,
        code=code("measure_segments_onnx"),
    output:
        f"{BACKBONE_DIR}/latency/segments_onnx.json",
    log:
        "logs/measure_segments_onnx/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/measure_segments_onnx/{dataset}/{backbone}.tsv"
    conda:
        "../envs/deploy.yaml"
    threads: 2  # timing on the CPU: nothing else runs beside it on a 2-core machine
    resources:
        mem_mb=4000,
        runtime=40,
    params:
        settings=as_json(segment_settings()),
        probe=lambda w, input: f"--probe {input.probe}" if input.probe else "",
    shell:
        "python -m calex_steps.stages.measure_segments_onnx --prepared {input.prepared}"
        " --backbone {input.backbone} {params.probe} --features {input.features}"
        " --settings {params.settings:q} --threads {threads} --out {output} > {log} 2>&1"


rule measure_latency_onnx:
    input:
        prepared=PREPARED,
        backbone=BACKBONE,
        probe=probe_input,
        features=FEATURES,
        segments=f"{BACKBONE_DIR}/latency/segments_onnx.json",
        runs=latency_inputs,
        code=code("measure_latency_onnx"),
    output:
        table=f"{BACKBONE_DIR}/latency/latency_onnx.csv",
        int8=f"{BACKBONE_DIR}/latency/int8.csv",
    log:
        "logs/measure_latency_onnx/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/measure_latency_onnx/{dataset}/{backbone}.tsv"
    conda:
        "../envs/deploy.yaml"
    threads: 2  # timing on the CPU: nothing else runs beside it on a 2-core machine
    resources:
        mem_mb=8000,
        runtime=lambda w: 30 + 10 * len(onnx_latency_plan(w)),
    params:
        plan=lambda w: as_json({"recipes": onnx_latency_plan(w)}),
        latency={k: CFG["latency"][k] for k in ("fr", *LATENCY_KEYS)},
        batch_sizes=" ".join(str(b) for b in CFG["latency"]["batch_sizes"]),
    shell:
        "python -m calex_steps.stages.measure_latency_onnx --prepared {input.prepared}"
        " --plan {params.plan:q} --fr {params.latency[fr]}"
        " --batch-sizes {params.batch_sizes} --warmup {params.latency[warmup]}"
        " --timed {params.latency[timed]} --segments {input.segments}"
        " --threads {threads}"
        " --out-table {output.table} --out-int8 {output.int8} > {log} 2>&1"


rule onnx_exports:
    input:
        onnx_export_targets(),


rule onnx_all:
    input:
        onnx_export_targets(int8=True),
        expand(
            f"{RESULTS}/{{dataset}}/{{backbone}}/latency/{{name}}",
            dataset=STUDY["datasets"],
            backbone=STUDY["backbones"],
            name=("latency_onnx.csv", "int8.csv"),
        ),
