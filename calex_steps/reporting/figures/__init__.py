"""The comparison figures (docs/results.md#figures), one module per figure family.

Each family module holds a tidy-table builder (run data in, pandas out) and
a plotting function (tidy frame in, matplotlib Figure out); ``style`` gives
every figure the same recipe colours and saving; ``runs`` reads run files.
A new figure is a module here, a stage ``stages/plot_<name>.py`` and a rule.
"""
