# Stage 3: one job per branch of a sequential recipe (SPEC section 6).


rule train_branch:
    input:
        features=FEATURES,
        backbone=BACKBONE,
        prev=previous_branches,
        code=code("train_branch"),
    output:
        head=f"{RUN_PATTERN}/branch{{branch}}.pt",
        outputs=f"{RUN_PATTERN}/branch{{branch}}.npz",
    log:
        "logs/train_branch/{dataset}/{backbone}/{recipe}/seed{seed}/branch{branch}.log",
    benchmark:
        "benchmarks/train_branch/{dataset}/{backbone}/{recipe}/seed{seed}/branch{branch}.tsv"
    wildcard_constraints:
        recipe=recipes_with("schedule", "sequential"),
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=lambda w: estimate.feature_mem_mb(
            CFG, w.dataset, w.backbone, int(w.branch)
        ),
        runtime=120,
    params:
        settings=lambda w: as_json(train_settings(w.recipe)),
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.train_branch --features {input.features}"
        " --branch {wildcards.branch} --prev {input.prev} --backbone {input.backbone}"
        " --recipe {wildcards.recipe}"
        " --settings {params.settings:q} --seed {wildcards.seed}"
        " --device {params.device} --threads {threads}"
        " --out-head {output.head} --out-outputs {output.outputs} > {log} 2>&1"
