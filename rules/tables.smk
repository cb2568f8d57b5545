# Stage 5a: the loss tables and the generated summary (SPEC section 10).
# Tables, figures and the summary are report() outputs with captions in reports/captions/.


rule report_all:
    input:
        report_targets(),


rule make_tables:
    input:
        sweeps=lambda w: study_files(w, "sweep.csv"),
        code=code("make_tables"),
    output:
        csv=report(
            f"{TABLES}/{{dataset}}/loss_at_fr.csv",
            caption=f"{CAPTIONS}/loss_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "loss at fixed FR"},
        ),
        md=f"{TABLES}/{{dataset}}/loss_at_fr.md",
        tex=f"{TABLES}/{{dataset}}/loss_at_fr.tex",
    log:
        "logs/make_tables/{dataset}.log",
    benchmark:
        "benchmarks/make_tables/{dataset}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=as_json({"backbones": STUDY["backbones"], "recipes": STUDY["recipes"]}),
    shell:
        "python -m calex_steps.stages.make_tables --sweeps {input.sweeps}"
        " --settings {params.settings:q}"
        " --out-csv {output.csv} --out-md {output.md} --out-tex {output.tex} > {log} 2>&1"


rule write_summary:
    input:
        tables=expand(f"{TABLES}/{{dataset}}/loss_at_fr.csv", dataset=STUDY["datasets"]),
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
        "python -m calex_steps.stages.write_summary --tables {input.tables}"
        " --out {output.summary} > {log} 2>&1"
