"""luodi (落地): put large models to real use, offline first."""

__version__ = "0.1.0"
