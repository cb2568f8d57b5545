"""From sweeps to claims: reading the sweep outputs (``runfiles``), curves (``curves``), the
paired bootstrap (``bootstrap``), the tables of a dataset (``study``, ``tables``,
``documents``, ``ranking``), statistics (``metrics``), latency tables (``latency``), the
summary (``summary``), the paper's claims (``claims``) and the figures (``figures``, one
module per family). pandas, numpy and matplotlib; no torch.
"""
