"""SAT: N:M-sparse DNN training accelerator generator (BDWP)."""

__version__ = "0.1.0"
