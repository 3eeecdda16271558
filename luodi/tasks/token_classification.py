"""Token classification (named-entity recognition) with BIO tags.

Model (`model.type: feature-tagger`): the bundled MiniLM encoder is frozen and read once per word
(first sub-word, several layers, cached on disk); a small trained network mixes those layers, adds
what the uncased encoder cannot see (a character CNN over the cased word and its casing pattern),
runs a context layer over the sentence (two convolutions by default, or a BiLSTM with
`context: lstm`) and scores BIO tags. Decoding is Viterbi restricted to valid BIO
transitions. Entity-level precision/recall/F1 follow conlleval/seqeval (exact span and type match).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.config import AppConfig, model_options
from luodi.data.split import split_indices
from luodi.data.text import read_conll
from luodi.embeddings import get_encoder
from luodi.errors import BadRequest, ConfigError
from luodi.options import TokenClassificationOptions
from luodi.tasks.base import TaskBase, TextInputs
from luodi.tasks.bio_tags import WORD_RE, allowed_transitions, entity_scores, spans, viterbi
from luodi.tasks.text_records import records_texts
from luodi.tasks.token_optimizing import OnnxLayerFeatures, TokenOptimizing

Sentence = dict[str, list[str]]  # {"tokens": [...], "tags": [...]}
CASES = ["lower", "upper", "title", "mixed", "digit", "has_digit", "punct", "other"]


class NerIn(BaseModel):
    text: str = Field(min_length=1, description="text to find entities in")


class Entity(BaseModel):
    text: str
    label: str
    start: int = Field(description="character offset where the entity starts")
    end: int = Field(description="character offset just after the entity")
    score: float


class NerOut(BaseModel):
    entities: list[Entity]


def casing(word: str) -> int:
    if word.isdigit():
        return 4
    if word.islower():
        return 0
    if word.isupper():
        return 1
    if word[:1].isupper() and word[1:].islower():
        return 2
    if any(c.isdigit() for c in word):
        return 5
    if not any(c.isalnum() for c in word):
        return 6
    return 3 if any(c.isalpha() for c in word) else 7


# ---------------------------------------------------------------- network


def build_network(n_layers: int, dim: int, n_chars: int, n_tags: int, o: TokenClassificationOptions):
    import torch
    from torch import nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Parameter(torch.zeros(n_layers))
            self.chars = nn.Embedding(n_chars, o.char_dim, padding_idx=0)
            self.conv = nn.Conv1d(o.char_dim, o.char_filters, 3, padding=1)
            self.case = nn.Embedding(len(CASES), 8)
            self.drop = nn.Dropout(o.dropout)
            width = dim + o.char_filters + 8
            if o.context == "lstm":
                self.lstm = nn.LSTM(width, o.hidden, batch_first=True, bidirectional=True)
                self.out = nn.Linear(2 * o.hidden, n_tags)
            else:
                self.conv1 = nn.Conv1d(width, o.hidden, 5, padding=2)
                self.conv2 = nn.Conv1d(o.hidden, o.hidden, 3, padding=1)
                self.out = nn.Linear(o.hidden, n_tags)

        def forward(self, feats, chars, case):
            # feats (B, T, L, D) ; chars (B, T, C) ; case (B, T)
            x = (feats * torch.softmax(self.mix, 0)[None, None, :, None]).sum(2)
            b, t, c = chars.shape
            ch = self.chars(chars.view(b * t, c)).transpose(1, 2)
            ch = torch.relu(self.conv(ch)).max(2).values.view(b, t, -1)
            h = self.drop(torch.cat([x, ch, self.case(case)], dim=-1))
            if o.context == "lstm":
                h, _ = self.lstm(h)
            else:
                h = torch.relu(self.conv1(h.transpose(1, 2)))
                h = torch.relu(self.conv2(self.drop(h))).transpose(1, 2)
            return self.out(self.drop(h))

    return Tagger()


class TokenClassificationTask(TokenOptimizing, TextInputs, TaskBase):
    name: ClassVar[str] = "token-classification"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        if config.model.type not in (None, "feature-tagger", "feature-bilstm"):
            raise ConfigError(
                f"model.type '{config.model.type}' is not supported for token-classification; "
                "use 'feature-tagger'",
                param="model.type",
            )
        self.opts: TokenClassificationOptions = model_options(config)
        self.source = config.model.source or "bundled:minilm-l6"
        self.tags: list[str] = []
        self.chars: dict[str, int] = {}
        self.net = None
        self.dim = 0
        self.features: OnnxLayerFeatures | None = None  # the encoder as ONNX (an optimized run), else torch

    # ------------------------------------------------------------ data
    def read(self, path: str | None = None) -> list[Sentence]:
        path = path or self.config.data.path
        if not path:
            raise ConfigError("data.path is not set: point it at a CoNLL file", param="data.path")
        return read_conll(path, to_bio=bool(self.config.data.options.get("to_bio", True)))

    def split(self, data: list[Sentence]) -> tuple[list[Sentence], list[Sentence]]:
        """data.split.valid_path: a separate validation file; otherwise a seeded share of the sentences."""
        s = self.config.data.split
        s.only(self.name, "valid", "seed", "valid_path")
        if s.valid_path:
            return data, self.read(s.valid_path)
        tr, va = split_indices(len(data), s)
        return [data[i] for i in tr], [data[i] for i in va]

    # ------------------------------------------------------------ tensors
    def _batch(self, sents: list[list[str]], feats: list[np.ndarray], tags: list[list[str]] | None = None):
        import torch

        b, t = len(sents), max(len(s) for s in sents)
        c = min(20, max(len(w) for s in sents for w in s))
        n_layers, dim = feats[0].shape[1:]
        x = np.zeros((b, t, n_layers, dim), dtype=np.float32)
        ch = np.zeros((b, t, c), dtype=np.int64)
        case = np.zeros((b, t), dtype=np.int64)
        y = np.full((b, t), -100, dtype=np.int64)
        tag_index = {tg: i for i, tg in enumerate(self.tags)}
        for i, s in enumerate(sents):
            x[i, : len(s)] = feats[i]
            for j, w in enumerate(s):
                ids = [self.chars.get(k, 1) for k in w[:c]]
                ch[i, j, : len(ids)] = ids
                case[i, j] = casing(w)
                if tags is not None:
                    y[i, j] = tag_index.get(tags[i][j], tag_index["O"])
        return torch.from_numpy(x), torch.from_numpy(ch), torch.from_numpy(case), torch.from_numpy(y)

    def _feats(self, sents: list[list[str]], progress: bool = False, cache: bool = True) -> list[np.ndarray]:
        enc = get_encoder(self.source)
        return enc.word_features(sents, self.opts.layers, self.opts.max_length, progress, cache=cache,
                                 forward=self.features)

    def _decode(
        self, sents: list[list[str]], progress: bool = False, cache: bool = True
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """Predicted tags and per-word probabilities of those tags (`cache=False`: encoder features not stored)."""
        import torch

        if self.net is None:
            raise BadRequest("this model is not trained yet: train it (luodi train APP) or load a run first")
        feats = self._feats(sents, progress, cache=cache)
        start, trans = allowed_transitions(self.tags)
        out_tags: list[list[str]] = [[] for _ in sents]
        out_p: list[np.ndarray] = [np.zeros(0) for _ in sents]
        order = np.argsort([len(s) for s in sents])
        self.net.eval()
        with torch.inference_mode():
            for k in range(0, len(sents), 64):
                idx = order[k : k + 64]
                x, ch, case, _ = self._batch([sents[i] for i in idx], [feats[i] for i in idx])
                logp = torch.log_softmax(self.net(x, ch, case), -1).numpy()
                for b, i in enumerate(idx):
                    lp = logp[b, : len(sents[i])]
                    path = viterbi(lp, start, trans)
                    out_tags[i] = [self.tags[p] for p in path]
                    out_p[i] = np.exp(lp[np.arange(len(path)), path])
        return out_tags, out_p

    # ------------------------------------------------------------ training
    def fit(self, train: list[Sentence], valid: list[Sentence], run_dir: Path, progress: bool = True) -> None:
        import torch
        from rich.console import Console

        console = Console(quiet=not progress)
        if not train:
            raise BadRequest("no training sentences")
        cfg = self.config.train
        torch.manual_seed(cfg.seed)
        found = sorted({t for s in train for t in s["tags"]} | {"O"})
        self.tags = ["O"] + [t for t in found if t != "O"]
        counts: dict[str, int] = {}
        for s in train:
            for w in s["tokens"]:
                for ch in w:
                    counts[ch] = counts.get(ch, 0) + 1
        self.chars = {ch: i + 2 for i, ch in enumerate(sorted(c for c, n in counts.items() if n >= 2))}
        words = [s["tokens"] for s in train]
        console.log(f"encoder features for {len(words)} training sentences (cached after the first run)")
        feats = self._feats(words, progress)
        valid = valid or []
        if valid:
            self._feats([s["tokens"] for s in valid], progress)
        n_layers, dim = feats[0].shape[1:]
        self.dim = int(dim)
        self.net = build_network(n_layers, dim, len(self.chars) + 2, len(self.tags), self.opts)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        ckpt = Path(run_dir) / "checkpoint"
        state = {"epoch": 0, "best": -1.0, "bad_epochs": 0}
        if (ckpt / "state.json").exists():
            state = self._load_checkpoint(ckpt, opt)
            console.log(f"resuming after epoch {state['epoch']} (best validation F1 {state['best']:.4f})")
        rng = np.random.default_rng(cfg.seed + state["epoch"])
        tags = [s["tags"] for s in train]
        n_batches = math.ceil(len(train) / cfg.batch_size)
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            self.net.train()
            # batches of similar lengths, visited in random order
            order = np.argsort([len(w) + rng.random() * 3 for w in words])
            batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            rng.shuffle(batches)
            total = 0.0
            from rich.progress import Progress

            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=n_batches)
                for idx in batches:
                    x, ch, case, y = self._batch(
                        [words[i] for i in idx], [feats[i] for i in idx], [tags[i] for i in idx]
                    )
                    loss = torch.nn.functional.cross_entropy(
                        self.net(x, ch, case).flatten(0, 1), y.flatten(), ignore_index=-100
                    )
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
                    opt.step()
                    total += loss.item()
                    bar.advance(task)
            f1 = self.evaluate(valid)["f1"] if valid else -float(total)
            improved = f1 > state["best"]
            state.update(epoch=epoch, bad_epochs=0 if improved else state["bad_epochs"] + 1)
            if improved:
                state["best"] = f1
                self.save(ckpt / "best")
            console.log(
                f"epoch {epoch}: loss {total / n_batches:.4f}  validation F1 {f1:.4f}"
                + ("  (best)" if improved else "")
            )
            self._save_checkpoint(ckpt, opt, state)
            self.on_epoch_end(epoch, {"train_loss": total / n_batches, "valid_f1": f1})
            if cfg.early_stopping and state["bad_epochs"] >= cfg.early_stopping:
                console.log(f"early stop: no improvement for {cfg.early_stopping} epochs")
                break
        if (ckpt / "best").exists():
            self.load(ckpt / "best")  # the epoch with the best validation F1

    def _save_checkpoint(self, ckpt: Path, opt, state: dict) -> None:
        """Weights, Adam moments and loop state after an epoch (safetensors + JSON, atomically)."""
        from safetensors.torch import save_file

        ckpt.mkdir(parents=True, exist_ok=True)
        self.save(ckpt / "last")
        moments = {}
        for i, p in enumerate(self.net.parameters()):
            st = opt.state.get(p, {})
            for k in ("exp_avg", "exp_avg_sq"):
                if k in st:
                    moments[f"{i}.{k}"] = st[k].contiguous()
            if "step" in st:
                moments[f"{i}.step"] = st["step"].reshape(1).float()
        with atomic_path(ckpt / "optimizer.safetensors") as tmp:
            save_file(moments, str(tmp))
        write_json(ckpt / "state.json", state)

    def _load_checkpoint(self, ckpt: Path, opt) -> dict:
        import torch
        from safetensors.torch import load

        self.load(ckpt / "last")
        opt.param_groups[0]["params"] = list(self.net.parameters())
        moments = load(crypto.read_bytes(ckpt / "optimizer.safetensors"))
        for i, p in enumerate(self.net.parameters()):
            if f"{i}.exp_avg" in moments:
                opt.state[p] = {
                    "step": torch.tensor(float(moments[f"{i}.step"][0])),
                    "exp_avg": moments[f"{i}.exp_avg"],
                    "exp_avg_sq": moments[f"{i}.exp_avg_sq"],
                }
        return crypto.read_json(ckpt / "state.json")

    # ------------------------------------------------------------ inference
    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.predict_texts(records_texts(records))

    def predict_texts(self, texts: list[str], cache: bool = True) -> list[dict[str, Any]]:
        """Entities (text, label, character start/end, score) per text; `cache=False` stores nothing about the
        texts (no encoder-feature cache on disk or in memory): what PII detection uses."""
        toks = [[(m.group(), m.start(), m.end()) for m in WORD_RE.finditer(t)] for t in texts]
        nonempty = [i for i, t in enumerate(toks) if t]
        sents = [[w for w, _, _ in toks[i]] for i in nonempty]
        tags, probs = self._decode(sents, cache=cache) if nonempty else ([], [])
        out: list[dict[str, Any]] = [{"entities": []} for _ in texts]
        for k, i in enumerate(nonempty):
            for kind, a, b in spans(tags[k]):
                s, e = toks[i][a][1], toks[i][b - 1][2]
                out[i]["entities"].append(
                    {
                        "text": texts[i][s:e],
                        "label": kind,
                        "start": s,
                        "end": e,
                        "score": round(float(probs[k][a:b].mean()), 4),
                    }
                )
        return out

    def evaluate(self, data: list[Sentence]) -> dict[str, Any]:
        if not data:
            raise BadRequest("no labelled sentences to evaluate")
        pred, _ = self._decode([s["tokens"] for s in data])
        gold = [s["tags"] for s in data]
        m = entity_scores(gold, pred)
        n = sum(len(g) for g in gold)
        m["token_accuracy"] = (
            sum(a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True)) / n
        )
        m["n_sentences"] = len(data)
        return m

    # ------------------------------------------------------------ persistence
    def save(self, run_dir: Path) -> None:
        from safetensors.torch import save_file

        if self.net is None:
            raise BadRequest("nothing to save: the model is not trained")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp))
        n_layers = len(self.opts.layers)
        dim = self.dim
        write_json(
            run_dir / "token_classification.json",
            {
                "task": self.name,
                "tags": self.tags,
                "chars": self.chars,
                "source": self.source,
                "options": self.opts.model_dump(),
                "n_layers": n_layers,
                "dim": dim,
            },
        )

    def load(self, run_dir: Path) -> None:
        from safetensors.torch import load

        run_dir = Path(run_dir)
        meta_path = run_dir / "token_classification.json"
        if not meta_path.exists():
            raise BadRequest(
                f"{run_dir} holds no token-classification model (token_classification.json missing)"
            )
        meta = crypto.read_json(meta_path)
        self.tags, self.chars, self.source = meta["tags"], meta["chars"], meta["source"]
        self.opts = TokenClassificationOptions.model_validate(meta["options"])
        self.dim = int(meta["dim"])
        self.net = build_network(
            meta["n_layers"], meta["dim"], len(self.chars) + 2, len(self.tags), self.opts
        )
        self.net.load_state_dict(load(crypto.read_bytes(run_dir / "model.safetensors")))
        self.net.eval()
        runtime = meta.get("encoder_runtime")  # `luodi optimize`: the encoder's layers as an ONNX graph
        self.features = OnnxLayerFeatures(run_dir / runtime["graph"]) if runtime else None

    def input_model(self) -> type[BaseModel]:
        return NerIn

    def output_model(self) -> type[BaseModel]:
        return NerOut
