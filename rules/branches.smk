# Stage 3: one job per branch of a sequential recipe, training the heads of all the
# study's seeds in one computation (docs/method.md#training); each seed keeps its own files.


rule train_branch:
    input:
        features=FEATURES,
        backbone=BACKBONE,
        prev=previous_branches,
        code=code("train_branch"),
    output:
        heads=all_seeds("branch{branch}.pt"),
        outputs=all_seeds("branch{branch}.npz"),
    log:
        "logs/train_branch/{dataset}/{backbone}/{recipe}/branch{branch}.log",
    benchmark:
        "benchmarks/train_branch/{dataset}/{backbone}/{recipe}/branch{branch}.tsv"
    wildcard_constraints:
        recipe=recipes_with("schedule", "sequential"),
    retries: 2
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=lambda w, attempt: attempt
        * estimate.feature_mem_mb(CFG, w.dataset, w.backbone, int(w.branch), w.recipe),
        runtime=120,
    params:
        settings=lambda w: as_json(train_settings(w.recipe)),
        exit=lambda w: recipe_exits(CFG, w.recipe, w.backbone)[int(w.branch) - 1],
        seeds=" ".join(str(s) for s in STUDY["seeds"]),
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.train_branch --features {input.features}"
        " --branch {wildcards.branch} --exit {params.exit}"
        " --prev {input.prev} --backbone {input.backbone}"
        " --recipe {wildcards.recipe}"
        " --settings {params.settings:q} --seed {params.seeds}"
        " --device {params.device} --threads {threads}"
        " --out-head {output.heads} --out-outputs {output.outputs} > {log} 2>&1"
