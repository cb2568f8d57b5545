# Stage 3 for the baselines (docs/method.md#recipes): joint recipes (PTEEnet, BoostNet)
# train all branches in one job; ZTW's branches train through train_branch and
# then get their per-exit geometric ensemble here. A joint recipe with `search`
# lists first picks its settings on the calibration split (search_baseline).
#
# A job writes one file per exit, and a rule's outputs cannot depend on a
# wildcard, so one rule is defined per distinct exit count among the study's
# recipes (named train_joint / ztw_ensemble when there is one count).


BRANCH_COUNTS = sorted({num_branches(r) for r in EXIT_RECIPES})
SEARCH_FILE = f"{RESULTS}/{{dataset}}/{{backbone}}/{{recipe}}/search.json"
SEARCHED = [r for r, s in CFG["recipes"].items() if s.get("search")]


rule search_baseline:
    input:
        features=FEATURES,
        code=code("search_baseline"),
    output:
        SEARCH_FILE,
    log:
        "logs/search_baseline/{dataset}/{backbone}/{recipe}.log",
    benchmark:
        "benchmarks/search_baseline/{dataset}/{backbone}/{recipe}.tsv"
    wildcard_constraints:
        recipe=alternation(SEARCHED),
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=lambda w: estimate.joint_mem_mb(CFG, w.dataset, w.backbone, w.recipe),
        runtime=720,
    params:
        settings=lambda w: as_json(train_settings(w.recipe)),
        exits=lambda w: as_json(recipe_exits(CFG, w.recipe, w.backbone)),
        seed=STUDY["seeds"][0],
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.search_baseline --features {input.features}"
        " --recipe {wildcards.recipe} --settings {params.settings:q} --exits {params.exits:q}"
        " --seed {params.seed} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"


for _count in BRANCH_COUNTS:
    _suffix = "" if len(BRANCH_COUNTS) == 1 else f"_{_count}"

    rule:
        name:
            f"train_joint{_suffix}"
        input:
            features=FEATURES,
            search=lambda w: SEARCH_FILE.format(**w) if w.recipe in SEARCHED else [],
            code=code("train_joint"),
        output:
            heads=per_branch(RUN_PATTERN, "branch", _count, ext="pt"),
            outputs=per_branch(RUN_PATTERN, "branch", _count),
        log:
            "logs/train_joint/{dataset}/{backbone}/{recipe}/seed{seed}.log",
        benchmark:
            "benchmarks/train_joint/{dataset}/{backbone}/{recipe}/seed{seed}.tsv"
        wildcard_constraints:
            recipe=recipes_with("schedule", "joint", _count),
        retries: 2
        conda:
            "../envs/calex.yaml"
        threads: 1
        resources:
            gpu=gpu,
            mem_mb=lambda w, attempt: attempt
            * estimate.joint_mem_mb(CFG, w.dataset, w.backbone, w.recipe),
            runtime=240,
        params:
            settings=lambda w: as_json(train_settings(w.recipe)),
            exits=lambda w: as_json(recipe_exits(CFG, w.recipe, w.backbone)),
            device=CFG["device"],
        shell:
            "python -m calex_steps.stages.train_joint --features {input.features}"
            " --recipe {wildcards.recipe} --settings {params.settings:q} --exits {params.exits:q}"
            " --seed {wildcards.seed} --device {params.device} --threads {threads}"
            " --search {input.search} --out-heads {output.heads} --out-outputs {output.outputs} > {log} 2>&1"

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
            recipe=recipes_with("exit_signal", "ztw_ensemble", _count),
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
