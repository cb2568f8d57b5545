# Stage 5a: the tables, the generated summary and the paper's claims (docs/results.md,
# docs/results.md). Tables, figures, the summary and the claims are report() outputs with
# captions in reports/captions/.


# What make_tables reads: the study's grid and the report block (the claims' allowance
# and the claim families excepted), and the batch size the sweep predicted latencies at.
TABLE_SETTINGS = as_json(
    {
        "backbones": STUDY["backbones"],
        "recipes": STUDY["recipes"],
        "lr_batch_size": CFG["latency"]["lr_batch_size"],
        **{
            k: v
            for k, v in CFG["report"].items()
            if k not in ("near_backbone", "claim_families")
        },
    }
)


rule report_all:
    input:
        report_targets(),


rule make_tables:
    input:
        frontiers=lambda w: study_files(w, "frontier.csv"),
        sweeps=lambda w: study_files(w, "sweep.csv"),
        exits=lambda w: study_files(w, "exits.npz"),
        segments=segment_files,
        code=code("make_tables"),
    output:
        loss=report(
            f"{TABLES}/{{dataset}}/loss_at_fr.csv",
            caption=f"{CAPTIONS}/loss_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "loss at fixed FR"},
        ),
        loss_md=f"{TABLES}/{{dataset}}/loss_at_fr.md",
        loss_tex=f"{TABLES}/{{dataset}}/loss_at_fr.tex",
        iso=report(
            f"{TABLES}/{{dataset}}/iso_accuracy.csv",
            caption=f"{CAPTIONS}/iso_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "table": "largest FR within a loss budget",
            },
        ),
        iso_md=f"{TABLES}/{{dataset}}/iso_accuracy.md",
        iso_tex=f"{TABLES}/{{dataset}}/iso_accuracy.tex",
        lr=report(
            f"{TABLES}/{{dataset}}/loss_at_lr.csv",
            caption=f"{CAPTIONS}/lr_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "loss at fixed LR"},
        ),
        lr_md=f"{TABLES}/{{dataset}}/loss_at_lr.md",
        lr_tex=f"{TABLES}/{{dataset}}/loss_at_lr.tex",
        grid=report(
            f"{TABLES}/{{dataset}}/paper_grid.csv",
            caption=f"{CAPTIONS}/grid_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "table": "paper grid against the frontier",
            },
        ),
        grid_md=f"{TABLES}/{{dataset}}/paper_grid.md",
        ranking=f"{TABLES}/{{dataset}}/ranking.csv",
        bootstrap=f"{TABLES}/{{dataset}}/bootstrap.npz",
    log:
        "logs/make_tables/{dataset}.log",
    benchmark:
        "benchmarks/make_tables/{dataset}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        settings=TABLE_SETTINGS,
        out_dir=lambda w: f"{TABLES}/{w.dataset}",
    shell:
        "python -m calex_steps.stages.make_tables --frontiers {input.frontiers}"
        " --sweeps {input.sweeps} --exits {input.exits} --segments {input.segments}"
        " --settings {params.settings:q}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule write_summary:
    input:
        rankings=expand(f"{TABLES}/{{dataset}}/ranking.csv", dataset=STUDY["datasets"]),
        code=code("write_summary"),
    output:
        summary=report(
            f"{RESULTS}/summary.md",
            caption=f"{CAPTIONS}/summary.rst",
            category="Summary",
            labels={"file": "summary.md"},
        ),
    log:
        "logs/write_summary/summary.log",
    benchmark:
        "benchmarks/write_summary/summary.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m calex_steps.stages.write_summary --rankings {input.rankings}"
        " --out {output.summary} > {log} 2>&1"


rule write_claims:
    input:
        bootstraps=expand(
            f"{TABLES}/{{dataset}}/bootstrap.npz", dataset=STUDY["datasets"]
        ),
        code=code("write_claims"),
    output:
        claims=report(
            f"{RESULTS}/claims.md",
            caption=f"{CAPTIONS}/claims.rst",
            category="Summary",
            labels={"file": "claims.md"},
        ),
    log:
        "logs/write_claims/claims.log",
    benchmark:
        "benchmarks/write_claims/claims.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        settings=as_json(
            {
                k: CFG["report"][k]
                for k in ("confidence", "near_backbone", "claim_families")
            }
        ),
    shell:
        "python -m calex_steps.stages.write_claims --bootstraps {input.bootstraps}"
        " --settings {params.settings:q} --out {output.claims} > {log} 2>&1"
