"""calex: early-exit cascades over a frozen CNN backbone, stage by stage."""

__version__ = "0.1.0"
