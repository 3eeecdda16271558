"""Training loops the tasks share (torch_loop.py), and where training keeps its state inside a run's folder."""

# per-epoch state under runs/<app>/<version>/: removed when the run finishes, never part of its manifest
CHECKPOINT_DIR = "checkpoint"
