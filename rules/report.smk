# Stage 5: tables, figures, summary and the Snakemake report (SPEC section 10).
# Every figure and table is a report() output with a caption in reports/captions/.
rule report_all:
    input:
        report_targets(),


rule make_tables:
    input:
        sweeps=lambda w: study_files(w, "sweep.csv"),
        code=code("tables", "make_tables"),
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
        "python -m calex_steps.make_tables --sweeps {input.sweeps} --settings {params.settings:q}"
        " --out-csv {output.csv} --out-md {output.md} --out-tex {output.tex} > {log} 2>&1"


rule plot_pareto:
    input:
        sweeps=study_runs("sweep.csv"),
        code=code("tables", "figures", "metrics", "make_figures"),
    output:
        png=report(
            f"{FIGURES}/{{dataset}}/{{backbone}}/pareto.png",
            caption=f"{CAPTIONS}/pareto.rst",
            category="Pareto frontiers",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "backbone": "{backbone}",
                "figure": "pareto",
            },
        ),
        pdf=f"{FIGURES}/{{dataset}}/{{backbone}}/pareto.pdf",
    log:
        "logs/plot_pareto/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_pareto/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        settings=figure_settings(),
    shell:
        "python -m calex_steps.make_figures pareto --sweeps {input.sweeps}"
        " --settings {params.settings:q} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule plot_ablation:
    input:
        sweeps=study_runs("sweep.csv"),
        code=code("tables", "figures", "metrics", "make_figures"),
    output:
        png=report(
            f"{FIGURES}/{{dataset}}/{{backbone}}/ablation.png",
            caption=f"{CAPTIONS}/ablation.rst",
            category="Ablation",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "backbone": "{backbone}",
                "figure": "ablation",
            },
        ),
        pdf=f"{FIGURES}/{{dataset}}/{{backbone}}/ablation.pdf",
    log:
        "logs/plot_ablation/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_ablation/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        settings=figure_settings(),
    shell:
        "python -m calex_steps.make_figures ablation --sweeps {input.sweeps}"
        " --settings {params.settings:q} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule plot_calibration:
    input:
        exits=study_runs("exits.npz"),
        thresholds=study_runs("thresholds.npz"),
        signals=signal_files,
        code=code("tables", "figures", "metrics", "make_figures"),
    output:
        png=report(
            f"{FIGURES}/{{dataset}}/{{backbone}}/calibration.png",
            caption=f"{CAPTIONS}/calibration.rst",
            category="Calibration",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "backbone": "{backbone}", "figure": "ECE"},
        ),
        pdf=f"{FIGURES}/{{dataset}}/{{backbone}}/calibration.pdf",
    log:
        "logs/plot_calibration/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_calibration/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=figure_settings(),
    shell:
        "python -m calex_steps.make_figures calibration --exits {input.exits}"
        " --settings {params.settings:q} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule plot_shift:
    input:
        exits=study_runs("exits.npz"),
        thresholds=study_runs("thresholds.npz"),
        prepared=f"{RESULTS}/{{dataset}}/prepared.h5",
        code=code("tables", "figures", "metrics", "make_figures"),
    output:
        png=report(
            f"{FIGURES}/{{dataset}}/{{backbone}}/shift.png",
            caption=f"{CAPTIONS}/shift.rst",
            category="Covariate shift",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "backbone": "{backbone}",
                "figure": "shift",
            },
        ),
        pdf=f"{FIGURES}/{{dataset}}/{{backbone}}/shift.pdf",
    log:
        "logs/plot_shift/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_shift/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=figure_settings(),
    shell:
        "python -m calex_steps.make_figures shift --exits {input.exits} --prepared {input.prepared}"
        " --settings {params.settings:q} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule plot_flow:
    input:
        exits=study_runs("exits.npz"),
        thresholds=study_runs("thresholds.npz"),
        prepared=f"{RESULTS}/{{dataset}}/prepared.h5",
        code=code("tables", "figures", "metrics", "make_figures"),
    output:
        png=report(
            f"{FIGURES}/{{dataset}}/{{backbone}}/flow.png",
            caption=f"{CAPTIONS}/flow.rst",
            category="Sample flow",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "backbone": "{backbone}",
                "figure": "flow",
            },
        ),
        pdf=f"{FIGURES}/{{dataset}}/{{backbone}}/flow.pdf",
    log:
        "logs/plot_flow/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_flow/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=figure_settings(),
    shell:
        "python -m calex_steps.make_figures flow --exits {input.exits} --prepared {input.prepared}"
        " --settings {params.settings:q} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule plot_exemplars:
    input:
        exits=lambda w: f"{exemplar_run(w)}/exits.npz",
        thresholds=lambda w: f"{exemplar_run(w)}/thresholds.npz",
        signals=exemplar_signals,
        prepared=f"{RESULTS}/{{dataset}}/prepared.h5",
        features=f"{RESULTS}/{{dataset}}/{{backbone}}/features.h5",
        code=code("tables", "figures", "metrics", "make_figures"),
    output:
        png=report(
            f"{FIGURES}/{{dataset}}/{{backbone}}/exemplars.png",
            caption=f"{CAPTIONS}/exemplars.rst",
            category="Exemplars",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "backbone": "{backbone}",
                "figure": "exemplars",
            },
        ),
        pdf=f"{FIGURES}/{{dataset}}/{{backbone}}/exemplars.pdf",
    log:
        "logs/plot_exemplars/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_exemplars/{dataset}/{backbone}.tsv"
    conda:
        "../envs/calex.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        settings=figure_settings(),
    shell:
        "python -m calex_steps.make_figures exemplars --exits {input.exits}"
        " --prepared {input.prepared} --features {input.features}"
        " --settings {params.settings:q} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule write_summary:
    input:
        tables=expand(f"{TABLES}/{{dataset}}/loss_at_fr.csv", dataset=STUDY["datasets"]),
        code=code("summary"),
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
        "python -m calex_steps.summary --tables {input.tables} --out {output.summary} > {log} 2>&1"
