"""One module per Snakemake rule, named after it: ``python -m calex_steps.stages.<rule>``.

A stage module parses its arguments, reads and writes files, logs, and calls
the library (``data``, ``models``, ``training``, ``calibration``, ``cascade``,
``reporting``); it holds no method of its own. Each has ``build_parser()``,
``run_<rule>(...)`` (what tests call) and ``main(argv)``.
"""
