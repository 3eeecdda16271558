"""luodi (落地): put large models to real use, offline first."""

import os

# OpenMP workers that spin while waiting make llama.cpp/torch collapse on a busy 2-core machine;
# this must be set before the OpenMP runtime loads (users can override it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
