"""Training: losses (``losses``, ``joint_losses``), survivor weights (``weighting``), the
shared epoch loop (``loops``) and resumable state (``scratch``); one module per way of
training: sequential branches (``branch``), joint recipes (``joint``), ZTW's ensemble
(``ztw``), backbone pretraining (``pretrain``, ``augment``), the linear probe (``probe``).
"""
