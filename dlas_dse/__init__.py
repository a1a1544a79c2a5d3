"""dlas-dse: design-space exploration across the Deep Learning Acceleration Stack."""

__version__ = "0.1.0"
