"""wattbench: time and energy of Triton kernels and PyTorch paths, training vs inference, per joule."""

__version__ = "0.1.0"
