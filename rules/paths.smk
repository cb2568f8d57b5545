# Where every output lives: one folder per dataset, backbone, recipe and seed.

RESULTS = "results"
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
CAPTIONS = "../reports/captions"


def run_path(dataset, backbone, recipe, seed):
    """The folder of one run: every branch, sweep and cascade file of it."""
    return f"{RESULTS}/{dataset}/{backbone}/{recipe}/seed{seed}"


RUN_PATTERN = run_path("{dataset}", "{backbone}", "{recipe}", "{seed}")
SPLIT_PATTERN = f"{RUN_PATTERN}/split{{split}}"
SPLITS = list(range(STUDY["splits"]))
BACKBONE_DIR = f"{RESULTS}/{{dataset}}/{{backbone}}"
PREPARED = f"{RESULTS}/{{dataset}}/prepared.h5"
BACKBONE = f"{BACKBONE_DIR}/backbone.pt"
FEATURES = f"{BACKBONE_DIR}/features.h5"


def run_dir(w):
    return run_path(w.dataset, w.backbone, w.recipe, w.seed)


def all_seeds(name):
    """``name`` in the run folder of every study seed (wildcards dataset, backbone, recipe
    kept): the files one job writes when it trains all seeds of a branch together."""
    return [
        f"{run_path('{dataset}', '{backbone}', '{recipe}', s)}/{name}"
        for s in STUDY["seeds"]
    ]


def seed_branch_files(w, count):
    """branch1.npz .. branch{count}.npz of the run of every study seed, seed by seed."""
    runs = [run_path(w.dataset, w.backbone, w.recipe, s) for s in STUDY["seeds"]]
    return [f for run in runs for f in per_branch(run, "branch", count)]


def split_dir(run, split=0):
    """The sweep outputs of one calibration/test split of a run (split 0 = the prepared one)."""
    return f"{run}/split{split}"


def per_branch(folder, stem, count, ext="npz"):
    """``folder/{stem}1.{ext}`` .. ``folder/{stem}{count}.{ext}``."""
    return [f"{folder}/{stem}{k}.{ext}" for k in range(1, count + 1)]


def signal_stem(recipe):
    """Which per-branch files hold a recipe's exit signal: ZTW's ensemble, else the branches."""
    signal = CFG["recipes"][recipe]["exit_signal"]
    return "ztw_ensemble" if signal == "ztw_ensemble" else "branch"


def figure_png(family, category, label):
    """A figure's PNG as a report() output, with its caption."""
    return report(
        f"{FIGURES}/{{dataset}}/{{backbone}}/{family}.png",
        caption=f"{CAPTIONS}/{family}.rst",
        category=category,
        subcategory="{dataset}",
        labels={"dataset": "{dataset}", "backbone": "{backbone}", "figure": label},
    )


def figure_pdf(family):
    return f"{FIGURES}/{{dataset}}/{{backbone}}/{family}.pdf"
