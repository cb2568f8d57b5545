# Stage 3 for the baselines (SPEC section 8): joint recipes (PTEEnet, BoostNet)
# train all branches in one job; ZTW's branches train through train_branch and
# then get their per-exit geometric ensemble here.
#
# A job writes one file per attach point, and a rule's outputs cannot depend on
# a wildcard, so one rule is defined per distinct branch count among the
# configured backbones (named train_joint / ztw_ensemble when there is one count).


BRANCH_COUNTS = sorted({num_branches(b) for b in CFG["backbones"]})


for _count in BRANCH_COUNTS:
    _suffix = "" if len(BRANCH_COUNTS) == 1 else f"_{_count}"

    rule:
        name:
            f"train_joint{_suffix}"
        input:
            features=FEATURES,
            code=code("train_joint"),
        output:
            heads=per_branch(RUN_PATTERN, "branch", _count, ext="pt"),
            outputs=per_branch(RUN_PATTERN, "branch", _count),
        log:
            "logs/train_joint/{dataset}/{backbone}/{recipe}/seed{seed}.log",
        benchmark:
            "benchmarks/train_joint/{dataset}/{backbone}/{recipe}/seed{seed}.tsv"
        wildcard_constraints:
            recipe=recipes_with("schedule", "joint"),
            backbone=backbones_with_branches(_count),
        conda:
            "../envs/calex.yaml"
        threads: 1
        resources:
            gpu=gpu,
            mem_mb=lambda w: estimate.joint_mem_mb(CFG, w.dataset, w.backbone),
            runtime=240,
        params:
            settings=lambda w: as_json(train_settings(w.recipe)),
            device=CFG["device"],
        shell:
            "python -m calex_steps.stages.train_joint --features {input.features}"
            " --recipe {wildcards.recipe} --settings {params.settings:q}"
            " --seed {wildcards.seed} --device {params.device} --threads {threads}"
            " --out-heads {output.heads} --out-outputs {output.outputs} > {log} 2>&1"

    rule:
        name:
            f"ztw_ensemble{_suffix}"
        input:
            features=FEATURES,
            branches=per_branch(RUN_PATTERN, "branch", _count),
            code=code("ztw_ensemble"),
        output:
            per_branch(RUN_PATTERN, "ztw_ensemble", _count),
        log:
            "logs/ztw_ensemble/{dataset}/{backbone}/{recipe}/seed{seed}.log",
        benchmark:
            "benchmarks/ztw_ensemble/{dataset}/{backbone}/{recipe}/seed{seed}.tsv"
        wildcard_constraints:
            recipe=recipes_with("exit_signal", "ztw_ensemble"),
            backbone=backbones_with_branches(_count),
        conda:
            "../envs/calex.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        shell:
            "python -m calex_steps.stages.ztw_ensemble --features {input.features}"
            " --branches {input.branches} --recipe {wildcards.recipe}"
            " --seed {wildcards.seed} --out {output} > {log} 2>&1"
