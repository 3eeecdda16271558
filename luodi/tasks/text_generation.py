"""Text generation: LoRA fine-tuning of a chat LLM on dialogues (e.g. a reply style).

The base model is the HF conversion of the bundled SmolLM2 GGUF (`luodi.models.gguf_to_hf_dir`) or any
local HF causal-LM directory. Dialogues are rendered with the model's chat template, utterances
alternating user / assistant; the loss and the perplexity count only assistant tokens. Only the LoRA
adapter is stored (peft, safetensors). `evaluate` reports held-out perplexity of the tuned model and of
the base model, and the relative reduction. `luodi optimize --method gguf` merges the adapter into a GGUF
(luodi.tasks.gguf_export) that the llama.cpp engine serves on /v1/chat/completions under the app's name; such
a run predicts and scores through that GGUF.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from luodi import crypto
from luodi.atomic import atomic_dir, atomic_path, write_json
from luodi.config import AppConfig, model_options
from luodi.data.split import split_indices
from luodi.data.text import read_dialogues
from luodi.errors import BadRequest, ConfigError
from luodi.options import TextGenerationOptions
from luodi.tasks.base import TaskBase, TextInputs

Dialogue = list[str]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateIn(BaseModel):
    text: str | None = Field(None, description="the user's message (single turn)")
    messages: list[ChatMessage] | None = Field(None, description="a conversation so far (multi-turn)")
    max_new_tokens: int | None = Field(None, ge=1, le=1024)


class GenerateOut(BaseModel):
    reply: str


def base_model_dir(source: str) -> str:
    """A local HF directory for the base model: GGUF files go through luodi.models.gguf_to_hf_dir."""
    from luodi.models import hf_model_dir

    return hf_model_dir(source, "LoRA")


GGUF_FILE = "model.gguf"  # the merged model of a run made by `luodi optimize --method gguf`
GGUF_DRIFT = 0.02  # the most the GGUF's held-out perplexity may differ from transformers' before f16 is tried


def served_gguf(run_dir: str | Path) -> Path | None:
    """The GGUF a text-generation run is served from (its text_generation.json says so), else None: how the
    server finds that an app answers on /v1/chat/completions."""
    meta = Path(run_dir) / "text_generation.json"
    if not meta.is_file():
        return None
    name = crypto.read_json(meta).get("gguf")
    path = Path(run_dir) / name if name else None
    # (llama.cpp opens the file itself: an encrypted one is handed over decrypted in memory, never on disk)
    return crypto.plain_handle(path) if path is not None and path.is_file() else None


class TextGenerationTask(TextInputs, TaskBase):
    name: ClassVar[str] = "text-generation"
    optimize_methods: ClassVar[tuple[str, ...]] = ("gguf",)

    def __init__(self, config: AppConfig):
        super().__init__(config)
        if config.model.type not in (None, "lora"):
            raise ConfigError(
                f"model.type '{config.model.type}' is not supported for text-generation; use 'lora'",
                param="model.type",
            )
        self.opts: TextGenerationOptions = model_options(config)
        self.source = config.model.source or "bundled:smollm2-135m-instruct"
        self.model = None
        self.tokenizer = None
        self.base_perplexity: dict[str, float] = {}
        self._evaluated: dict[str, dict[str, Any]] = {}  # metrics per evaluation set
        self.gguf: Path | None = None  # set when the run is served from a merged GGUF (optimize --method gguf)
        self._meta: dict[str, Any] = {}

    # ------------------------------------------------------------ data
    def read(self, path: str | None = None) -> list[Dialogue]:
        path = path or self.config.data.path
        if not path:
            raise ConfigError("data.path is not set: point it at a DailyDialog file", param="data.path")
        return read_dialogues(path)

    def split(self, data: list[Dialogue]) -> tuple[list[Dialogue], list[Dialogue]]:
        s = self.config.data.split
        s.only(self.name, "valid", "seed", "valid_path")
        if s.valid_path:
            train, valid = data, self.read(s.valid_path)
        else:
            tr, va = split_indices(len(data), s)
            train, valid = [data[i] for i in tr], [data[i] for i in va]
        rng = np.random.default_rng(s.seed)
        seen = {"\n".join(d) for d in train}
        valid = [d for d in valid if "\n".join(d) not in seen]  # no leak of duplicated dialogues
        if self.opts.max_train_dialogues and len(train) > self.opts.max_train_dialogues:
            train = [
                train[i] for i in sorted(rng.choice(len(train), self.opts.max_train_dialogues, replace=False))
            ]
        if self.opts.max_eval_dialogues:
            valid = valid[: self.opts.max_eval_dialogues]
        return train, valid

    # ------------------------------------------------------------ model
    def _load_base(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from luodi.models import load_quietly

        path = base_model_dir(self.source)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        return load_quietly(AutoModelForCausalLM.from_pretrained, path, dtype=torch.float32)

    def _messages(self, turns: Dialogue) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.opts.system}] if self.opts.system else []
        return msgs + [
            {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)
        ]

    def _encode(self, turns: Dialogue) -> tuple[list[int], list[int]]:
        """Token ids of the rendered dialogue and labels: assistant replies only (not their role header)."""
        tok = self.tokenizer
        msgs = self._messages(turns)
        ids: list[int] = []
        labels: list[int] = []
        prev = ""
        for i in range(1, len(msgs) + 1):
            text = tok.apply_chat_template(msgs[:i], tokenize=False)
            if not text.startswith(prev):  # template not prefix-stable: continue from the common prefix
                prev = os.path.commonprefix([prev, text])
            header = ""
            if msgs[i - 1]["role"] == "assistant":
                gen = tok.apply_chat_template(msgs[: i - 1], tokenize=False, add_generation_prompt=True)
                if gen.startswith(prev) and text.startswith(gen):
                    header = gen[len(prev) :]
            head_ids = tok(header, add_special_tokens=False)["input_ids"] if header else []
            body_ids = tok(text[len(prev) + len(header) :], add_special_tokens=False)["input_ids"]
            ids += head_ids + body_ids
            scored = msgs[i - 1]["role"] == "assistant"
            labels += [-100] * len(head_ids) + (body_ids if scored else [-100] * len(body_ids))
            prev = text
        return ids[: self.opts.max_length], labels[: self.opts.max_length]

    def _batches(self, dialogues: list[Dialogue], batch_size: int):
        import torch

        enc = [self._encode(d) for d in dialogues]
        enc = [e for e in enc if any(t != -100 for t in e[1])]
        pad = self.tokenizer.pad_token_id
        for k in range(0, len(enc), batch_size):
            chunk = enc[k : k + batch_size]
            n = max(len(i) for i, _ in chunk)
            ids = torch.tensor([i + [pad] * (n - len(i)) for i, _ in chunk])
            lab = torch.tensor([la + [-100] * (n - len(la)) for _, la in chunk])
            mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i, _ in chunk])
            yield ids, mask, lab

    def perplexity(self, dialogues: list[Dialogue], model=None, progress: bool = False) -> float:
        """exp(mean negative log-likelihood of assistant tokens)."""
        import torch

        model = model or self.model
        model.eval()
        nll, n = 0.0, 0
        batches = list(self._batches(dialogues, 8))
        if progress:
            from rich.progress import track

            batches = track(batches, description="perplexity")
        with torch.inference_mode():
            for ids, mask, lab in batches:
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                tgt = lab[:, 1:]
                loss = torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=-100, reduction="sum"
                )
                nll += float(loss)
                n += int((tgt != -100).sum())
        if n == 0:
            raise BadRequest("no assistant turns to score: dialogues need at least two utterances")
        return math.exp(nll / n)

    def _peft(self, base):
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=self.opts.r,
            lora_alpha=self.opts.alpha,
            lora_dropout=self.opts.dropout,
            target_modules=self.opts.target_modules,
            task_type="CAUSAL_LM",
        )
        with _quiet_peft():
            return get_peft_model(base, cfg)

    def fit(self, train: list[Dialogue], valid: list[Dialogue], run_dir: Path, progress: bool = True) -> None:
        import torch
        from rich.console import Console
        from rich.progress import Progress

        console = Console(quiet=not progress)
        cfg = self.config.train
        torch.manual_seed(cfg.seed)
        base = self._load_base()
        ckpt = Path(run_dir) / "checkpoint"
        if valid:
            key = f"{len(valid)}:{hash(tuple(map(tuple, valid))) & 0xFFFFFFFF}"
            console.log(f"base model perplexity on {len(valid)} held-out dialogues")
            self.base_perplexity = {key: self.perplexity(valid, base, progress)}
            console.log(f"base perplexity {self.base_perplexity[key]:.2f}")
        self.model = self._peft(base)
        self._evaluated = {}
        state = {"epoch": 0, "step": 0}
        if (ckpt / "state.json").exists():
            from peft import set_peft_model_state_dict
            from safetensors.torch import load

            state = crypto.read_json(ckpt / "state.json")
            set_peft_model_state_dict(self.model, load(crypto.read_bytes(ckpt / "adapter_model.safetensors")))
            console.log(f"resuming at epoch {state['epoch'] + 1}, step {state['step']}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / max(1, total_steps))
        )
        for _ in range(state["epoch"] * steps_per_epoch + state["step"]):
            sched.step()
        for epoch in range(state["epoch"], cfg.epochs):
            rng = np.random.default_rng(cfg.seed + epoch)
            order = [train[i] for i in rng.permutation(len(train))]
            batches = list(self._batches(order, cfg.batch_size))
            self.model.train()
            running, n_steps = 0.0, 0
            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches))
                for step, (ids, mask, lab) in enumerate(batches):
                    if epoch == state["epoch"] and step < state["step"]:
                        bar.advance(task)
                        continue
                    loss = self.model(input_ids=ids, attention_mask=mask, labels=lab).loss
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    sched.step()
                    running, n_steps = running + loss.item(), n_steps + 1
                    bar.update(task, advance=1, description=f"epoch {epoch + 1} loss {loss.item():.3f}")
                    if (step + 1) % self.opts.checkpoint_every == 0:
                        self._checkpoint(ckpt, {"epoch": epoch, "step": step + 1})
            self._checkpoint(ckpt, {"epoch": epoch + 1, "step": 0})
            console.log(f"epoch {epoch + 1} done")
            self.on_epoch_end(epoch + 1, {"train_loss": running / max(1, n_steps)})

    def _checkpoint(self, ckpt: Path, state: dict) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        ckpt.mkdir(parents=True, exist_ok=True)
        sd = {k: v.contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        with atomic_path(ckpt / "adapter_model.safetensors") as tmp:
            save_file(sd, str(tmp))
        write_json(ckpt / "state.json", state)

    def _require_model(self):
        if self.model is None:
            raise BadRequest("this model is not trained yet: train it (luodi train APP) or load a run first")

    # ------------------------------------------------------------ inference
    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import torch

        self._require_model()
        out = []
        for i, r in enumerate(records):
            try:
                req = GenerateIn.model_validate(r)
            except Exception as e:
                raise BadRequest(f'records[{i}]: {e}; send {{"text": "..."}} or {{"messages": [...]}}') from e
            if req.messages:
                msgs = [m.model_dump() for m in req.messages]
                if self.opts.system and msgs[0]["role"] != "system":
                    msgs = [{"role": "system", "content": self.opts.system}, *msgs]
            elif req.text and req.text.strip():
                msgs = self._messages([req.text])
            else:
                raise BadRequest(f"records[{i}]: give a non-empty 'text' or 'messages'", param="text")
            if self.gguf is not None:
                out.append({"reply": self._gguf_reply(msgs, req.max_new_tokens or self.opts.max_new_tokens)})
                continue
            prompt = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            self.model.eval()
            with torch.inference_mode():
                gen = self.model.generate(
                    **ids,
                    max_new_tokens=req.max_new_tokens or self.opts.max_new_tokens,
                    do_sample=False,
                    repetition_penalty=1.1,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            reply = self.tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            out.append({"reply": reply.strip()})
        return out

    def _gguf_reply(self, msgs: list[dict[str, str]], max_new_tokens: int) -> str:
        """A greedy reply from the merged GGUF on the shared llama.cpp engine (the one the server uses)."""
        from luodi.engines import SamplingParams, complete, get_engine
        from luodi.llm.sync import run_sync

        engine = get_engine(str(self.gguf), "llamacpp")
        ids = engine.tokenize(engine.chat_prompt(msgs))
        params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
        return run_sync(complete(engine, ids, params)).text.strip()

    def records_of(self, data: list[Dialogue]) -> list[dict[str, Any]]:
        """The prediction requests of held-out dialogues (for `luodi optimize`'s table): each opening line."""
        return [{"text": d[0]} for d in data if d and d[0].strip()]

    def parameter_count(self) -> int:
        """Weights the model computes with (the base model's, plus the adapter's unless merged into a GGUF)."""
        self._require_model()
        n = sum(p.numel() for p in self.model.parameters())
        if self.gguf is not None:
            n -= sum(p.numel() for name, p in self.model.named_parameters() if "lora_" in name)
        return int(n)

    def evaluate(self, data: list[Dialogue]) -> dict[str, Any]:
        self._require_model()
        if not data:
            raise BadRequest("no dialogues to evaluate")
        if self.opts.max_eval_dialogues:
            data = data[: self.opts.max_eval_dialogues]
        key = f"{len(data)}:{hash(tuple(map(tuple, data))) & 0xFFFFFFFF}"
        if key in self._evaluated:  # this set was already scored with these weights
            return dict(self._evaluated[key])
        ppl = self.perplexity(data) if self.gguf is None else self.gguf_perplexity(self.gguf, data)
        if key not in self.base_perplexity and self.gguf is not None:  # as served: the base GGUF on llama.cpp
            from luodi.models import resolve

            self.base_perplexity[key] = self.gguf_perplexity(Path(resolve(self.source).path), data)
        if key not in self.base_perplexity:
            with self.model.disable_adapter():
                self.base_perplexity[key] = self.perplexity(data)
        base = self.base_perplexity[key]
        self._evaluated[key] = {
            "perplexity": ppl,
            "base_perplexity": base,
            "perplexity_reduction": 1 - ppl / base,
            "n_dialogues": len(data),
        }
        return dict(self._evaluated[key])

    # ------------------------------------------------------------ persistence
    def save(self, run_dir: Path) -> None:
        self._require_model()
        run_dir = Path(run_dir)
        with atomic_dir(run_dir, merge=True) as tmp:  # the adapter's files join the run's folder
            self.model.save_pretrained(str(tmp), safe_serialization=True)
        write_json(
            run_dir / "text_generation.json",
            {**self._meta, "task": self.name, "source": self.source, "options": self.opts.model_dump()},
        )

    def load(self, run_dir: Path) -> None:
        from peft import PeftModel

        run_dir = Path(run_dir)
        meta_path = run_dir / "text_generation.json"
        if not meta_path.exists():
            raise BadRequest(f"{run_dir} holds no text-generation model (text_generation.json missing)")
        meta = crypto.read_json(meta_path)
        self._meta = {k: v for k, v in meta.items() if k not in ("task", "source", "options")}
        self.gguf = served_gguf(run_dir)
        self.source = meta["source"]
        self.opts = TextGenerationOptions.model_validate(meta["options"])
        with _quiet_peft():
            with crypto.plain_dir(run_dir, ("adapter_config.json", "adapter_model.safetensors")) as adapter:
                self.model = PeftModel.from_pretrained(self._load_base(), str(adapter))
        self._evaluated = {}
        self.model.eval()

    # ------------------------------------------------------------ luodi optimize --method gguf
    def gguf_perplexity(self, gguf: Path, dialogues: list[Dialogue]) -> float:
        """Held-out reply-token perplexity through llama.cpp, on the same token ids `perplexity` scores."""
        from luodi.tasks.gguf_export import gguf_reply_perplexity

        encoded = [e for e in (self._encode(d) for d in dialogues) if any(t != -100 for t in e[1])]
        if not encoded:
            raise BadRequest("no assistant turns to score: dialogues need at least two utterances")
        return gguf_reply_perplexity(gguf, encoded)

    def optimize(self, method: str, run_dir: Path, score: Callable[[], float], calibration: list[Dialogue],
                 opts: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """`gguf`: merge the adapter into the base weights and write them into a copy of the base GGUF (q8_0,
        or f16 when q8_0 drifts more than GGUF_DRIFT), so the llama.cpp engine serves the app with continuous
        batching; held-out perplexity through transformers (merged model) and through the GGUF, on the same token
        ids, is recorded. `score` and `opts` are unused: the held-out split, not calibration rows, is the check."""
        from luodi.models import resolve
        from luodi.tasks.gguf_export import WEIGHTS, write_merged_gguf

        if method != "gguf":
            raise ConfigError(f"--method '{method}' is not available for text-generation; use gguf", param="method")
        self._require_model()
        src = resolve(self.source)
        if src.kind != "gguf":
            raise ConfigError(f"--method gguf needs a GGUF base model (model.source), not a {src.kind} "
                              f"('{self.source}')", param="model.source")
        valid = self.split(self.read(None))[1] or list(calibration)
        run_dir = Path(run_dir)
        lora = {name.removeprefix("base_model.model.") for name, m in self.model.named_modules()
                if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
        merged = self.model.merge_and_unload()
        state = merged.state_dict()
        changed = {f"{m}.weight": state[f"{m}.weight"] for m in sorted(lora)}
        say(f"merged the adapter into {len(changed)} weights; held-out perplexity on {len(valid)} dialogues")
        ppl_hf = self.perplexity(valid, merged)
        out: dict[str, Any] = {"method": "gguf", "transformers_perplexity": ppl_hf, "n_dialogues": len(valid)}
        for weights in WEIGHTS:
            out.update(write_merged_gguf(src.path, changed, run_dir / GGUF_FILE, weights))
            ppl = self.gguf_perplexity(run_dir / GGUF_FILE, valid)
            drift = ppl / ppl_hf - 1
            say(f"{weights}: perplexity transformers {ppl_hf:.3f}, GGUF {ppl:.3f} ({100 * drift:+.2f} %)")
            out.update(gguf_perplexity=ppl, perplexity_diff_pct=round(100 * drift, 3),
                       gguf_mb=round((run_dir / GGUF_FILE).stat().st_size / 1e6, 2))
            if abs(drift) <= GGUF_DRIFT:
                break
        self._meta = {"gguf": GGUF_FILE, "served_as": "gguf", "gguf_weights": out["weights"],
                      "perplexity": {k: out[k] for k in ("transformers_perplexity", "gguf_perplexity",
                                                          "perplexity_diff_pct", "n_dialogues")}}
        write_json(run_dir / "text_generation.json",
                   {**self._meta, "task": self.name, "source": self.source, "options": self.opts.model_dump()})
        return out

    def input_model(self) -> type[BaseModel]:
        return GenerateIn

    def output_model(self) -> type[BaseModel]:
        return GenerateOut


@contextmanager
def _quiet_peft():
    """peft wraps a model by reading transformers' deprecated `is_gradient_checkpointing` (a FutureWarning on
    every train and load that the user cannot act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
