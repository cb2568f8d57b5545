# Stage 2: the frozen backbone, its coarse probe and the feature cache
# (docs/method.md#backbone). backbone.pt is protected: an accidental full rerun stops
# instead of retraining it (chmod u+w it to retrain on purpose).


rule pretrain_backbone:
    input:
        data=PREPARED,
        code=code("pretrain_backbone"),
    output:
        protected(BACKBONE),
    log:
        "logs/pretrain_backbone/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/pretrain_backbone/{dataset}/{backbone}.tsv"
    wildcard_constraints:
        backbone=backbones_with_checkpoint(False),
    retries: 2
    conda:
        "../envs/calex.yaml"
    threads: 2
    resources:
        gpu=gpu,
        mem_mb=lambda w, attempt: 8000 * attempt,
        runtime=lambda w: estimate.pretrain_runtime(CFG, w.dataset, w.backbone),
    params:
        backbone=lambda w: as_json(backbone_model_cfg(w)),
        settings=as_json(CFG["pretrain"]),
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.pretrain_backbone --data {input.data}"
        " --backbone {params.backbone:q} --settings {params.settings:q}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule import_backbone:
    input:
        data=PREPARED,
        checkpoint=lambda w: backbone_cfg(w)["checkpoint"],
        code=code("import_backbone"),
    output:
        protected(BACKBONE),
    log:
        "logs/import_backbone/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/import_backbone/{dataset}/{backbone}.tsv"
    wildcard_constraints:
        backbone=backbones_with_checkpoint(True),
    conda:
        "../envs/calex.yaml"
    threads: 2
    resources:
        gpu=gpu,
        mem_mb=4000,
        runtime=30,
    params:
        backbone=lambda w: as_json(backbone_model_cfg(w)),
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.import_backbone --data {input.data}"
        " --backbone {params.backbone:q} --checkpoint {input.checkpoint}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule probe_coarse:
    input:
        data=PREPARED,
        backbone=BACKBONE,
        code=code("probe_coarse"),
    output:
        f"{BACKBONE_DIR}/probe.pt",
    log:
        "logs/probe_coarse/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/probe_coarse/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 2
    resources:
        gpu=gpu,
        mem_mb=8000,
        runtime=60,
    params:
        settings=as_json(CFG["probe"]),
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.probe_coarse --data {input.data}"
        " --backbone {input.backbone} --settings {params.settings:q}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule cache_features:
    input:
        data=PREPARED,
        backbone=BACKBONE,
        probe=probe_input,
        code=code("cache_features"),
    output:
        FEATURES,
    log:
        "logs/cache_features/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/cache_features/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 2
    resources:
        gpu=gpu,
        mem_mb=8000,
        runtime=120,
        disk_mb=lambda w: estimate.cache_disk_mb(CFG, w.dataset, w.backbone),
    params:
        attach=lambda w: as_json(cache_layout(CFG, w.backbone)),
        settings=as_json(CFG["cache"]),
        device=CFG["device"],
    shell:
        "python -m calex_steps.stages.cache_features --data {input.data}"
        " --backbone {input.backbone} --probe {input.probe} --attach {params.attach:q}"
        " --settings {params.settings:q} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"
