"""Which engine `LUODI_ENGINE=auto` means here: vllm where it can run (vLLM installed and a CUDA GPU visible), else
llamacpp. Apart from vllm.py so that choosing imports neither vLLM, nor the openai client, nor (without vLLM) torch.
"""

from __future__ import annotations

import functools
import importlib.util

INSTALL = "pip install 'luodi[vllm]' on a machine with an NVIDIA GPU and its CUDA driver"


@functools.cache
def vllm_installed() -> bool:
    """Asked once per process: get_engine resolves `auto` on every call, and a module search reads sys.path."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def cuda_devices() -> int:
    """CUDA GPUs torch sees (0 on a CPU build of torch). Only asked once vLLM is installed: importing torch costs
    a second, and without vLLM the answer changes nothing."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA setup counts as no GPU; --engine vllm says so
        return 0


def why_not() -> str | None:
    """Why the vllm engine cannot run here, or None when it can."""
    if not vllm_installed():
        return f"vLLM is not installed ({INSTALL})"
    if cuda_devices() == 0:
        return ("no CUDA GPU is visible (torch.cuda.is_available() is False: no NVIDIA GPU, driver or CUDA build "
                "of torch)")
    return None


def choose_backend(name: str) -> str:
    """The engine `name` stands for: `auto` -> vllm where it can run, else llamacpp; any other name as it is."""
    if name.lower() != "auto":
        return name.lower()
    return "vllm" if why_not() is None else "llamacpp"
