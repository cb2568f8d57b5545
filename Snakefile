# calex: early-exit cascades over a frozen CNN backbone.
# Stages live in rules/*.smk; their code in the calex_steps package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "workflow_config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/backbone.smk"
include: "rules/branches.smk"
include: "rules/baselines.smk"
include: "rules/sweep.smk"
include: "rules/report.smk"
include: "rules/deploy.smk"


rule all:
    default_target: True
    input:
        all_targets(),
