# Stage 3: one job per branch of a sequential recipe (SPEC section 6).


rule train_branch:
    input:
        features=f"{RESULTS}/{{dataset}}/{{backbone}}/features.h5",
        backbone=f"{RESULTS}/{{dataset}}/{{backbone}}/backbone.pt",
        prev=previous_branches,
        code=code(
            "features",
            "heads",
            "losses",
            "weighting",
            "training_utils",
            "train_branch",
        ),
    output:
        head=f"{RUN_PATTERN}/branch{{branch}}.pt",
        outputs=f"{RUN_PATTERN}/branch{{branch}}.npz",
    log:
        "logs/train_branch/{dataset}/{backbone}/{recipe}/seed{seed}/branch{branch}.log",
    benchmark:
        "benchmarks/train_branch/{dataset}/{backbone}/{recipe}/seed{seed}/branch{branch}.tsv"
    wildcard_constraints:
        recipe=recipes_with("sequential"),
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=feature_mem_mb,
        runtime=120,
    params:
        settings=lambda w: as_json(train_settings(w.recipe)),
        device=CFG["device"],
    shell:
        "python -m calex_steps.train_branch --features {input.features}"
        " --branch {wildcards.branch} --prev {input.prev} --backbone {input.backbone}"
        " --recipe {wildcards.recipe}"
        " --settings {params.settings:q} --seed {wildcards.seed}"
        " --device {params.device} --threads {threads}"
        " --out-head {output.head} --out-outputs {output.outputs} > {log} 2>&1"
