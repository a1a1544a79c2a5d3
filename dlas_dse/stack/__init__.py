"""The six DLAS layers. Importing this package registers every layer's techniques."""

from dlas_dse.stack import algorithms, compilers, compression, datasets, devices, models  # noqa: F401
