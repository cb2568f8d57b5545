# Stage 1: every source becomes one uniform prepared file (docs/method.md#data).


rule prepare_dataset:
    input:
        code=code("prepare_dataset"),
    output:
        PREPARED,
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 2
    resources:
        mem_mb=lambda w: estimate.prepare_mem_mb(CFG, w.dataset),
        disk_mb=lambda w: estimate.prepared_disk_mb(CFG, w.dataset),
        runtime=30,
    params:
        settings=lambda w: as_json(dataset_cfg(w)),
    shell:
        "python -m calex_steps.stages.prepare_dataset --dataset {wildcards.dataset}"
        " --settings {params.settings:q} --workers {threads} --out {output} > {log} 2>&1"
