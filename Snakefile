# calex: early-exit cascades over a frozen CNN backbone.
# The table of contents: each stage is a rule in rules/*.smk, named after the
# module it runs (calex_steps/stages/<rule>.py) and its test (tests/test_<rule>.py).
from snakemake.utils import min_version

min_version("9.0")


configfile: "workflow_config.yaml"


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_-]*",
    recipe="[A-Za-z0-9][A-Za-z0-9_-]*",
    seed="[0-9]+",
    branch="[0-9]+",
    split="[0-9]+",


include: "rules/common.smk"  # config validation, settings, derived code inputs
include: "rules/paths.smk"  # where every output lives
include: "rules/inputs.smk"  # input functions and the study's targets
include: "rules/data.smk"  # prepare_dataset
include: "rules/backbone.smk"  # pretrain_backbone, import_backbone, probe_coarse, cache_features
include: "rules/branches.smk"  # train_branch
include: "rules/baselines.smk"  # train_joint, ztw_ensemble
include: "rules/sweep.smk"  # sweep_margins
include: "rules/tables.smk"  # make_tables, write_summary
include: "rules/figures.smk"  # plot_pareto, plot_ablation, ... plot_exemplars
include: "rules/deploy_inputs.smk"  # input functions of the deploy rules
include: "rules/deploy.smk"  # export_cascade, measure_latency
include: "rules/deploy_onnx.smk"  # export_onnx, check_onnx, quantize_onnx, ..._onnx


rule all:
    default_target: True
    input:
        all_targets(),
