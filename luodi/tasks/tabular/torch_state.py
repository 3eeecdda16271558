"""Torch helpers of the table tasks: modules' weights in one safetensors file (the MLP's and the anomaly
autoencoder's `mlp.safetensors` / `autoencoder.safetensors`, keys prefixed with the module's name), shuffled
mini-batches, and the MLP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from luodi import atomic, crypto


def save_torch_state(path: Path, modules: dict[str, Any]) -> None:
    """Modules' state dicts in one safetensors file, keys prefixed with the module's name."""
    from safetensors.torch import save

    tensors = {
        f"{name}.{k}": v.detach().contiguous().clone()
        for name, m in modules.items()
        for k, v in m.state_dict().items()
    }
    atomic.write_bytes(path, save(tensors))


def load_torch_state(path: Path) -> dict[str, dict[str, Any]]:
    """{module name: state_dict} from a file written by save_torch_state."""
    from safetensors.torch import load

    mods: dict[str, dict[str, Any]] = {}
    for key, tensor in load(crypto.read_bytes(path)).items():
        head, rest = key.split(".", 1)
        mods.setdefault(head, {})[rest] = tensor
    return mods


def tensor_batches(*tensors: Any, batch_size: int):
    """Shuffled mini-batches of row-aligned tensors (a DataLoader; the shuffle follows torch's seed)."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

    data = TensorDataset(*tensors)
    batches = BatchSampler(RandomSampler(data), batch_size, drop_last=False)
    return DataLoader(data, sampler=batches, batch_size=None)


def make_mlp(n_in: int, n_out: int, hidden: list[int], dropout: float):
    import torch.nn as nn

    layers: list[Any] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)

