"""The six DLAS layers. Importing this package registers every layer's techniques."""

from dlas_dse.stack import algorithms, compiler, compression, datasets, devices, models, peer_compilers  # noqa: F401
