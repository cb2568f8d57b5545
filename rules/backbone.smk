# Stage 2: the frozen backbone, its coarse probe and the feature cache
# (SPEC sections 3 and 4).


rule pretrain_backbone:
    input:
        data=f"{RESULTS}/{{dataset}}/prepared.h5",
        code=code("backbones", "training_utils", "pretrain_backbone"),
    output:
        f"{RESULTS}/{{dataset}}/{{backbone}}/backbone.pt",
    log:
        "logs/pretrain_backbone/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/pretrain_backbone/{dataset}/{backbone}.tsv"
    wildcard_constraints:
        backbone=backbones_with_checkpoint(False),
    conda:
        "../envs/calex.yaml"
    threads: 2
    resources:
        gpu=gpu,
        mem_mb=8000,
        runtime=pretrain_runtime,
    params:
        backbone=lambda w: as_json(backbone_model_cfg(w)),
        settings=as_json(CFG["pretrain"]),
        device=CFG["device"],
    shell:
        "python -m calex_steps.pretrain_backbone --data {input.data}"
        " --backbone {params.backbone:q} --settings {params.settings:q}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule import_backbone:
    input:
        data=f"{RESULTS}/{{dataset}}/prepared.h5",
        checkpoint=lambda w: backbone_cfg(w)["checkpoint"],
        code=code("backbones", "pretrain_backbone", "import_backbone"),
    output:
        f"{RESULTS}/{{dataset}}/{{backbone}}/backbone.pt",
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
        "python -m calex_steps.import_backbone --data {input.data}"
        " --backbone {params.backbone:q} --checkpoint {input.checkpoint}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule probe_coarse:
    input:
        data=f"{RESULTS}/{{dataset}}/prepared.h5",
        backbone=f"{RESULTS}/{{dataset}}/{{backbone}}/backbone.pt",
        code=code("backbones", "frozen", "training_utils", "probe_coarse"),
    output:
        f"{RESULTS}/{{dataset}}/{{backbone}}/probe.pt",
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
        "python -m calex_steps.probe_coarse --data {input.data}"
        " --backbone {input.backbone} --settings {params.settings:q}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule cache_features:
    input:
        data=f"{RESULTS}/{{dataset}}/prepared.h5",
        backbone=f"{RESULTS}/{{dataset}}/{{backbone}}/backbone.pt",
        probe=probe_input,
        code=code("backbones", "frozen", "features", "flops", "cache_features"),
    output:
        f"{RESULTS}/{{dataset}}/{{backbone}}/features.h5",
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
    params:
        attach=lambda w: as_json(backbone_cfg(w)["attach_points"]),
        settings=as_json(CFG["cache"]),
        device=CFG["device"],
    shell:
        "python -m calex_steps.cache_features --data {input.data}"
        " --backbone {input.backbone} --probe {input.probe} --attach {params.attach:q}"
        " --settings {params.settings:q} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"
