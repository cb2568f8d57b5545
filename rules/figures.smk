# Stage 5b: the six figure families of one (dataset, backbone) (docs/method.md#comparison).
# plot_pareto is written out once; the other plot rules inherit its body and
# change only their inputs, outputs, log, resources and the settings they read
# (plot_pareto's hold the LR batch size, plot_ablation's the backbone it shows).
# Every rule runs the stage module named after it, calex_steps/stages/plot_<family>.py,
# where <family> is the name of its PNG.


rule plot_pareto:
    input:
        frontiers=study_runs("frontier.csv", SPLITS),
        segments=lambda w: segment_files(w, [w.backbone]),
        code=code("plot_pareto"),
    output:
        png=figure_png("pareto", "Pareto frontiers", "pareto"),
        pdf=figure_pdf("pareto"),
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
        stage=lambda w, output: f"plot_{Path(output.png).stem}",
        args=figure_args,
        settings=figure_settings(latency=True),
    shell:
        "python -m calex_steps.stages.{params.stage} {params.args}"
        " --settings {params.settings:q} --out-png {output.png} --out-pdf {output.pdf}"
        " > {log} 2>&1"


use rule plot_pareto as plot_ablation with:
    input:
        tables=f"{TABLES}/{{dataset}}/loss_at_fr.csv",
        code=code("plot_ablation"),
    output:
        png=figure_png("ablation", "Ablation", "ablation"),
        pdf=figure_pdf("ablation"),
    log:
        "logs/plot_ablation/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_ablation/{dataset}/{backbone}.tsv"
    params:
        settings=lambda w: figure_settings(w.backbone),


use rule plot_pareto as plot_calibration with:
    input:
        exits=study_runs("exits.npz", recipes=own_branch_recipes(CFG, SIGNAL_STEMS)),
        thresholds=study_runs(
            "thresholds.npz", recipes=own_branch_recipes(CFG, SIGNAL_STEMS)
        ),
        signals=signal_files,
        code=code("plot_calibration"),
    output:
        png=figure_png("calibration", "Calibration", "ECE"),
        pdf=figure_pdf("calibration"),
    log:
        "logs/plot_calibration/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_calibration/{dataset}/{backbone}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=figure_settings(),


use rule plot_pareto as plot_shift with:
    input:
        exits=study_runs("exits.npz"),
        thresholds=study_runs("thresholds.npz"),
        prepared=PREPARED,
        code=code("plot_shift"),
    output:
        png=figure_png("shift", "Covariate shift", "shift"),
        pdf=figure_pdf("shift"),
    log:
        "logs/plot_shift/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_shift/{dataset}/{backbone}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=figure_settings(),


use rule plot_pareto as plot_flow with:
    input:
        exits=study_runs("exits.npz"),
        thresholds=study_runs("thresholds.npz"),
        prepared=PREPARED,
        code=code("plot_flow"),
    output:
        png=figure_png("flow", "Sample flow", "flow"),
        pdf=figure_pdf("flow"),
    log:
        "logs/plot_flow/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_flow/{dataset}/{backbone}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=figure_settings(),


use rule plot_pareto as plot_exemplars with:
    input:
        exits=lambda w: f"{exemplar_split(w)}/exits.npz",
        thresholds=lambda w: f"{exemplar_split(w)}/thresholds.npz",
        signals=exemplar_signals,
        prepared=PREPARED,
        features=FEATURES,
        code=code("plot_exemplars"),
    output:
        png=figure_png("exemplars", "Exemplars", "exemplars"),
        pdf=figure_pdf("exemplars"),
    log:
        "logs/plot_exemplars/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/plot_exemplars/{dataset}/{backbone}.tsv"
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        settings=figure_settings(),
