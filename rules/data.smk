# Stage 1: every source becomes one uniform prepared file (SPEC section 2).


rule prepare_dataset:
    input:
        code=code("datasets", "prepare_dataset"),
    output:
        f"{RESULTS}/{{dataset}}/prepared.h5",
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=lambda w: 2000 + train_size(w.dataset) * 3072 * 4 // 2**20,
        runtime=30,
    params:
        settings=lambda w: as_json(dataset_cfg(w)),
    shell:
        "python -m calex_steps.prepare_dataset --dataset {wildcards.dataset}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"
