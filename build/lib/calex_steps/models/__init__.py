"""Networks: backbones by name (``backbones``), loading weights (``checkpoints``), running
them (``inference``), the prototype heads (``heads``), the packed Gram form (``gram``),
and MACs counted on the model itself (``flops``). A new backbone family goes in
``backbones`` (built by name) and, for the deployable cascade, ``cascade.module``.
"""
