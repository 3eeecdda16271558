"""Fine-tuning the encoder for text classification (`model.options.features: [finetune, ...]`).

The encoder (the bundled MiniLM by default) is trained end to end — or only its top `finetune_layers`
layers — under a cosine classifier: mean-pooled hidden states, L2-normalized, scaled, then a linear layer.
Training runs on luodi/train/torch_loop.py (progress bar, per-epoch checkpoints, --resume), with label
smoothing, AdamW (head learning rate 20x the encoder's) and linear warmup then cosine decay; `finetune_bf16`
runs the forward pass under bfloat16 autocast (float32 weights, optimizer and predictions). The weights of
the LAST epoch are kept: selecting the epoch on the validation split would flatter the reported numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luodi.models import hf_model_dir, load_quietly
from luodi.train.torch_loop import CHECKPOINT_DIR, LoopConfig, load_weights, save_weights, train_loop

WEIGHTS = "finetuned.safetensors"


class CosineClassifier(nn.Module):
    """Encoder + mean pooling + L2 normalization + scaled linear head. The encoder is a BERT-style model
    (MiniLM) or a decoder LM (SmolLM2, also from its GGUF): both give hidden states to mean-pool."""

    def __init__(
        self,
        source: str,
        n_classes: int,
        scale: float = 20.0,
        dropout: float = 0.1,
        field: str = "model.source",
        layers: list[int] | None = None,
        pruned: Any | None = None,
    ):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = hf_model_dir(source, "fine-tuning", field=field)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:  # decoder LMs: pad with EOS (masked out of the pooling)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.encoder = load_quietly(AutoModel.from_pretrained, path, dtype=torch.float32)
        if layers is not None:
            self.keep_layers(layers)
        if pruned is not None:  # a structurally pruned run (options.PrunedEncoder): its shapes, then its weights
            from luodi.tasks.text_prune import apply_shapes

            apply_shapes(self, pruned)
        self.scale = scale
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(self.encoder.config.hidden_size), n_classes)

    def _layers(self) -> nn.ModuleList:
        enc = self.encoder
        return enc.encoder.layer if hasattr(enc, "encoder") and hasattr(enc.encoder, "layer") else enc.layers

    def keep_layers(self, layers: list[int]) -> None:
        """Keep only these transformer layers, in this order (a distilled student: model.options.encoder_layers)."""
        from luodi.errors import ConfigError

        have = self._layers()
        if max(layers) >= len(have):
            raise ConfigError(f"model.options.encoder_layers {layers}: the encoder has layers 0..{len(have) - 1}",
                              param="model.options.encoder_layers")
        kept = nn.ModuleList([have[i] for i in layers])
        if hasattr(self.encoder, "encoder") and hasattr(self.encoder.encoder, "layer"):
            self.encoder.encoder.layer = kept
        else:
            self.encoder.layers = kept
        self.encoder.config.num_hidden_layers = len(layers)

    def freeze_below(self, trained_layers: int, embeddings: bool = False) -> None:
        """Train only the top `trained_layers` transformer layers (and the token embeddings if asked)."""
        enc = self.encoder
        bert = hasattr(enc, "encoder") and hasattr(enc.encoder, "layer")
        layers = enc.encoder.layer if bert else enc.layers
        first = max(0, len(layers) - trained_layers)
        for p in (enc.embeddings if bert else enc.get_input_embeddings()).parameters():
            p.requires_grad = embeddings
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                p.requires_grad = i >= first

    def tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(self.dropout(F.normalize(pooled, dim=-1) * self.scale))

    @torch.inference_mode()
    def log_proba(self, texts: list[str], max_length: int, batch_size: int = 128) -> np.ndarray:
        if self.training:  # (eval() walks every submodule: 0.5 ms of a 6 ms batch-1 prediction of a 3-layer student)
            self.eval()
        out = np.zeros((len(texts), self.head.out_features), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths together: little padding
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            logits = self(self.tokenize([texts[i] for i in idx], max_length))
            out[idx] = F.log_softmax(logits, dim=-1).numpy()
        return out


class _Batches:
    """Shuffled mini-batches of indices; torch's RNG (seeded per epoch by the loop) keeps resume exact.

    With `group` > 1 each run of `group` consecutive batches of the shuffled order is sorted by token length
    before it is cut into batches, and the batches are then shuffled again: batches stay random in content
    but pad far less (banking77, batch 32: padded tokens 2.9x the real ones with random batches, 1.3x with
    group 8). Sorting the whole epoch by length instead made every batch one length and cost accuracy."""

    def __init__(self, n: int, batch_size: int, lengths: np.ndarray | None = None, group: int = 1):
        self.n, self.batch_size, self.lengths, self.group = n, batch_size, lengths, group

    def __len__(self) -> int:
        if self.group <= 1 or self.lengths is None:
            return (self.n + self.batch_size - 1) // self.batch_size
        size = self.batch_size * self.group
        full, rest = divmod(self.n, size)
        return full * self.group + (rest + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        perm = torch.randperm(self.n).numpy()
        bs = self.batch_size
        if self.group <= 1 or self.lengths is None:
            for start in range(0, self.n, bs):
                yield perm[start : start + bs]
            return
        batches = []
        for start in range(0, self.n, bs * self.group):
            chunk = perm[start : start + bs * self.group]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + bs] for i in range(0, len(chunk), bs)]
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i]


class FinetunedEnsemble:
    """Several CosineClassifiers fine-tuned from different seeds; log-probabilities averaged (geometric mean)."""

    def __init__(self, members: list[CosineClassifier]):
        self.members = members

    @property
    def head(self) -> nn.Linear:
        return self.members[0].head

    def log_proba(self, texts: list[str], max_length: int, batch_size: int = 128) -> np.ndarray:
        lp = np.mean([m.log_proba(texts, max_length, batch_size) for m in self.members], axis=0)
        return lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)


def member_sources(opts: Any, source: str) -> list[str]:
    """The encoder of each fine-tuned member: `finetune_seeds` x model.source, then finetune_sources' counts."""
    return [source] * opts.finetune_seeds + [s for s, n in opts.finetune_sources.items() for _ in range(n)]


def member_dir(run_dir: Path, k: int) -> Path:
    """Where fine-tuned member k checkpoints: member 0 in the run dir itself (as before ensembles), the
    others inside its checkpoint folder, so deleting that folder after training removes them all."""
    return Path(run_dir) if k == 0 else Path(run_dir) / CHECKPOINT_DIR / f"finetune-member-{k}"


def member_weights(k: int) -> str:
    return WEIGHTS if k == 0 else f"finetuned-{k}.safetensors"


def finetune(
    texts: list[str],
    y: np.ndarray,
    n_classes: int,
    *,
    source: str,
    opts: Any,
    train: Any,
    run_dir: Path,
    valid: tuple[list[str], np.ndarray] | None = None,
    progress: bool = True,
) -> FinetunedEnsemble:
    """Fine-tune one CosineClassifier per member_sources entry (seeds train.seed, +1, ...) on (texts, y), one
    after the other, each resumable from its own checkpoints; each keeps its last epoch's weights."""
    labels = torch.tensor(np.asarray(y, dtype=np.int64))
    lengths: dict[str, np.ndarray] = {}  # token counts per encoder, for length-grouped batches

    def step(m: CosineClassifier, idx: np.ndarray) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.finetune_bf16):
            logits = m(m.tokenize([texts[i] for i in idx], opts.max_length))
        return F.cross_entropy(logits.float(), labels[idx], label_smoothing=opts.label_smoothing)

    def evaluate(m: CosineClassifier) -> dict[str, float]:
        vt, vy = valid
        return {"valid_accuracy": float((m.log_proba(vt, opts.max_length).argmax(1) == vy).mean())}

    members = []
    for k, member_source in enumerate(member_sources(opts, source)):
        member_train = train.model_copy(update={"seed": train.seed + k})
        torch.manual_seed(member_train.seed)
        field = "model.source" if k < opts.finetune_seeds else "model.options.finetune_sources"
        model = CosineClassifier(member_source, n_classes, scale=opts.head_scale, field=field,
                                 layers=opts.encoder_layers, pruned=opts.pruned[k] if opts.pruned else None)
        model.freeze_below(opts.finetune_layers, embeddings=opts.finetune_embeddings)
        if member_source not in lengths:
            ids = model.tokenizer(texts, truncation=True, max_length=opts.max_length)["input_ids"]
            lengths[member_source] = np.array([len(i) for i in ids])
        encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": encoder_params, "lr": train.lr}, {"params": model.head.parameters(), "lr": train.lr * 20}],
            weight_decay=0.01,
        )
        batches = _Batches(len(texts), train.batch_size, lengths[member_source], opts.finetune_length_group)
        cfg = LoopConfig.from_train(
            member_train, schedule="onecycle", warmup=0.06, monitor="epoch", mode="max", patience=None
        )
        train_loop(
            model, batches, step, evaluate if valid else None, member_dir(run_dir, k), cfg,
            optimizer=optimizer, progress=progress,
        )
        members.append(model.eval())
    return FinetunedEnsemble(members)


def save_finetuned(model: FinetunedEnsemble, run_dir: Path) -> None:
    for k, member in enumerate(model.members):
        save_weights(member, Path(run_dir) / member_weights(k))


def load_finetuned(
    run_dir: Path, sources: list[str], n_classes: int, scale: float, layers: list[int] | None = None,
    pruned: list[Any] | None = None,
) -> FinetunedEnsemble:
    """The fine-tuned members of a run; `pruned` (model.options.pruned): each member's shapes, built first."""
    loaded = []
    for k, source in enumerate(sources):
        model = CosineClassifier(source, n_classes, scale=scale, layers=layers,
                                 pruned=pruned[k] if pruned else None)
        load_weights(model, Path(run_dir) / member_weights(k))
        loaded.append(model.eval())
    return FinetunedEnsemble(loaded)


def learn_from_teacher(
    model: CosineClassifier,
    texts: list[str],
    y: np.ndarray,
    teacher_log_probs: np.ndarray,
    *,
    opts: Any,
    kd: Any,
    checkpoints: Path,
    progress: bool = True,
) -> CosineClassifier:
    """Train `model` (every layer it has) on alpha * T^2 * KL(teacher_T || model_T) + (1 - alpha) * CE(labels):
    the one knowledge-distillation loop, for a distilled student and for a pruned encoder's recovery. `kd` holds
    temperature, alpha, lr, batch_size, epochs and seed (optimize.distill / optimize.prune)."""
    model.freeze_below(len(model._layers()), embeddings=opts.finetune_embeddings)
    soft = torch.tensor(teacher_log_probs, dtype=torch.float32)
    labels = torch.tensor(np.asarray(y, dtype=np.int64))
    t, alpha = kd.temperature, kd.alpha
    ids = model.tokenizer(texts, truncation=True, max_length=opts.max_length)["input_ids"]
    batches = _Batches(len(texts), kd.batch_size, np.array([len(i) for i in ids]), opts.finetune_length_group)

    def step(m: CosineClassifier, idx: np.ndarray) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.finetune_bf16):
            logits = m(m.tokenize([texts[i] for i in idx], opts.max_length))
        logits = logits.float()
        teacher = F.log_softmax(soft[idx] / t, -1)
        loss = F.kl_div(F.log_softmax(logits / t, -1), teacher, log_target=True, reduction="batchmean") * t * t
        return alpha * loss + (1 - alpha) * F.cross_entropy(logits, labels[idx])

    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": kd.lr}, {"params": model.head.parameters(), "lr": kd.lr * 20}],
        weight_decay=0.01,
    )
    cfg = LoopConfig(epochs=kd.epochs, lr=kd.lr, seed=kd.seed, schedule="onecycle", warmup=0.06, monitor="epoch",
                     mode="max", patience=None)
    torch.manual_seed(kd.seed)
    train_loop(model, batches, step, None, checkpoints, cfg, optimizer=optimizer, progress=progress)
    return model.eval()


def distill(
    texts: list[str],
    y: np.ndarray,
    teacher_log_probs: np.ndarray,
    start: CosineClassifier,
    *,
    opts: Any,
    distill_opts: Any,
    run_dir: Path,
    previous: Any | None = None,
    progress: bool = True,
) -> tuple[CosineClassifier, dict[str, Any] | None]:
    """A student with the teacher's layers `distill_opts.layers` (copied from `start`, a fine-tuned member), with
    `distill_opts.heads` / `.ffn` of their attention heads / feed-forward channels cut out (text_prune.narrow),
    that learns the whole trained model's log-probabilities (every head mixed): one small encoder learns what the
    ensemble knows. Returns it and its shapes (model.options.pruned's entry; None: the unpruned widths).
    `previous`: `start`'s shapes (options.PrunedEncoder) when it was pruned before."""
    import copy

    from luodi.errors import ConfigError
    from luodi.tasks.text_prune import bert_layers, narrow

    student = copy.deepcopy(start)
    student.keep_layers(distill_opts.layers)
    if distill_opts.heads or distill_opts.ffn:
        try:
            bert_layers(student)
        except ConfigError as err:  # a decoder LM member: its heads and channels are not cut
            raise ConfigError(f"optimize.distill.heads / ffn cut BERT-style encoders (MiniLM); the student's "
                              f"encoder is a {type(student.encoder).__name__}: set both to 0",
                              param="optimize.distill.ffn") from err
    kept = [previous.heads[i] for i in distill_opts.layers] if previous is not None else None
    shape = narrow(student, texts, y, opts.max_length, distill_opts, previous=kept)
    student = learn_from_teacher(student, texts, y, teacher_log_probs, opts=opts, kd=distill_opts,
                                 checkpoints=Path(run_dir) / CHECKPOINT_DIR / "distill", progress=progress)
    return student, shape
