"""Files on disk between the stages, and the sources they start from.

``sources`` (which data sets exist and how each is prepared; one reader
module per family: ``synthetic``, ``archives``), ``splits`` (seeded
stratified carving), ``prepared`` (``prepared.h5``), ``feature_cache``
(``features.h5``), ``branch_files`` (``branch{l}.npz``). numpy and h5py
only: nothing here imports torch.
"""
