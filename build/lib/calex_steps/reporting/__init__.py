"""From sweeps to claims: reading curves (``curves``), loss tables (``tables``), statistics
(``metrics``), latency tables (``latency``), the summary (``summary``) and the figures
(``figures``, one module per family). pandas, numpy and matplotlib; no torch.
"""
