"""Load a safetensors file into a model's own tensors as a stream: for weights encrypted at rest (luodi.crypto).

Why: a plaintext safetensors file is memory-mapped and copied into the model once. Decrypting a file to bytes
first and then parsing it would allocate and copy the whole file twice more (the bytes, then new tensors), which
costs more than the decryption itself on a large model (a fine-tuned MiniLM member is 87 MB). Here each decrypted
piece is copied straight to where it belongs in the model's parameters and buffers: one copy, no file-sized
buffer. The format is safetensors' own (8-byte little-endian header length, a JSON header of dtype, shape and
byte offsets per tensor, then the data); what is checked and returned matches safetensors.torch.load_model.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator

import torch

from luodi import crypto

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _Pieces:
    """Exact reads across a stream of pieces (views valid until the next piece is asked for)."""

    def __init__(self, pieces: Iterable[memoryview]):
        self.it: Iterator[memoryview] = iter(pieces)
        self.cur = memoryview(b"")
        self.pos = 0  # bytes consumed so far

    def _more(self) -> bool:
        while not self.cur:
            nxt = next(self.it, None)
            if nxt is None:
                return False
            self.cur = nxt.cast("B") if nxt.format != "B" else nxt
        return True

    def readinto(self, dst: memoryview) -> None:
        done = 0
        while done < len(dst):
            if not self._more():
                raise ValueError(f"the file ends at byte {self.pos} inside a tensor or its header")
            n = min(len(self.cur), len(dst) - done)
            dst[done : done + n] = self.cur[:n]
            self.cur, done, self.pos = self.cur[n:], done + n, self.pos + n

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(memoryview(buf))
        return bytes(buf)

    def skip_to(self, pos: int) -> None:
        while self.pos < pos:
            if not self._more():
                raise ValueError(f"the file ends at byte {self.pos} before byte {pos}")
            n = min(len(self.cur), pos - self.pos)
            self.cur, self.pos = self.cur[n:], self.pos + n
        if self.pos > pos:
            raise ValueError("tensors overlap in the file's header")


def load_streamed(model: torch.nn.Module, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Load the (encrypted or plaintext) safetensors file `path` into `model`; returns (missing, unexpected) names
    as safetensors.torch.load_model(strict=False) does. A tensor of another shape or dtype raises ValueError
    naming it. A model on the CPU that shares no tensor between two names takes the decrypted file's memory as
    its tensors (one decryption into fresh pages, nothing copied); another gets each piece copied in place."""
    from safetensors.torch import _remove_duplicate_names

    state = model.state_dict()  # (detached views of the parameters and buffers: writing them loads the model)
    if not _remove_duplicate_names(state) and all(t.device.type == "cpu" for t in state.values()):
        return _load_mapped(model, state, path)
    src = _Pieces(crypto.iter_plain_views(path))
    (n,) = struct.unpack("<Q", src.read(8))
    header = json.loads(src.read(n))
    header.pop("__metadata__", None)
    base = 8 + n
    unexpected: list[str] = []
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        start, end = entry["data_offsets"]
        src.skip_to(base + start)
        dst = state.get(name)
        if dst is None:
            unexpected.append(name)
            continue
        dtype = DTYPES.get(entry["dtype"])
        if dtype != dst.dtype or list(entry["shape"]) != list(dst.shape):
            raise ValueError(f"tensor '{name}' is {entry['dtype']} {entry['shape']} in the file, the model's is "
                             f"{dst.dtype} {list(dst.shape)}")
        if dst.device.type != "cpu" or not dst.is_contiguous():
            tmp = torch.empty(dst.shape, dtype=dtype)
            src.readinto(memoryview(tmp.view(-1).view(torch.uint8).numpy()))
            dst.copy_(tmp)
        else:
            with torch.no_grad():
                flat = dst.view(-1).view(torch.uint8)
            if flat.numel() != end - start:
                raise ValueError(f"tensor '{name}' has {end - start} bytes in the file, {flat.numel()} in the model")
            src.readinto(memoryview(flat.numpy()))
    if src._more():
        raise ValueError("the file has data after its last tensor")
    missing = set(state) - set(header)
    for group in _remove_duplicate_names(state, preferred_names=list(header)).values():
        for name in group:  # a tensor the model shares under two names is stored once
            if name in missing:
                missing.discard(name)
            elif name in header:
                unexpected.append(name)
    return sorted(missing), unexpected


def _load_mapped(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike):
    buf = crypto.read_mapped(path)
    if len(buf) < 8:
        raise ValueError("the file ends inside its header")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError("the file ends inside its header")
    header = json.loads(buf[8 : 8 + n])
    header.pop("__metadata__", None)
    tensors: dict[str, torch.Tensor] = {}
    unexpected = [name for name in header if name not in state]
    for name, entry in header.items():
        if name not in state:
            continue
        dst, dtype = state[name], DTYPES.get(entry["dtype"])
        start, end = entry["data_offsets"]
        if dtype != dst.dtype or list(entry["shape"]) != list(dst.shape) or 8 + n + end > len(buf) or (
            end - start != dst.numel() * dst.element_size()
        ):
            raise ValueError(f"tensor '{name}' is {entry['dtype']} {entry['shape']} in the file, the model's is "
                             f"{dst.dtype} {list(dst.shape)}")
        if end == start:
            tensors[name] = torch.empty(dst.shape, dtype=dtype)
        else:  # (frombuffer keeps `buf` alive as long as the tensor)
            tensors[name] = torch.frombuffer(buf, dtype=dtype, count=dst.numel(), offset=8 + n + start).view(dst.shape)
    model.load_state_dict(tensors, strict=False, assign=True)
    return sorted(set(state) - set(header)), unexpected
