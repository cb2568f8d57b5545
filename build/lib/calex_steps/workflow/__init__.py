"""What the Snakefile imports at parse time: configuration checks (``config``), the
resources each job asks for (``resources``) and each rule's code inputs (``code_deps``).
Light: no torch, no pandas (every cluster job parses the Snakefile again).
"""
