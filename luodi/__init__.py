"""luodi (落地): put large models to real use, offline first."""

import os

# OpenMP workers that spin while waiting make torch collapse on a busy 2-core machine (llama.cpp is built
# without OpenMP: luodi.engines.llamacpp_build);
# this must be set before the OpenMP runtime loads (users can override it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
