"""`model.options` of the text task families: text-classification, token-classification, text-generation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from luodi.options.strict import Strict


class PrunedEncoder(Strict):
    """The shapes of one structurally pruned encoder, rebuilt before its safetensors weights are loaded."""

    heads: list[list[Annotated[int, Field(ge=0)]]] = Field(
        description="per layer, the attention heads kept (0-based indices of the unpruned encoder's heads)"
    )
    ffn: list[Annotated[int, Field(ge=1)]] = Field(description="per layer, the feed-forward width kept")


class TextClassificationOptions(Strict):
    """`model.options` of a text-classification app."""

    features: list[str] = Field(
        default_factory=lambda: ["embeddings", "tfidf"],
        description="the heads: embeddings or finetune (or both, with head_weights), and tfidf",
    )
    layers: list[int] = Field(
        default_factory=lambda: [6],
        description="encoder layers, each mean-pooled, concatenated ([6]: the last layer of MiniLM-L6)",
    )
    max_length: int = Field(128, ge=8, le=512, description="tokens per text for the encoder")
    c_embeddings: float = Field(10.0, gt=0, description="inverse L2 strength of the embedding head")
    c_tfidf: float = Field(20.0, gt=0, description="inverse L2 strength of the TF-IDF head")
    tfidf_weight: float | None = Field(
        None, ge=0, le=1, description="mixing weight of the TF-IDF head; None: tuned on validation"
    )
    head_weights: dict[str, float] | None = Field(
        None,
        description="fixed mixing weights per head (normalized), e.g. {finetune: 0.7, embeddings: 0.15, "
        "tfidf: 0.15}; required when both neural heads are used, overrides tfidf_weight",
    )
    oos_label: str | None = Field(
        None, description="the label meaning 'none of the known classes' (e.g. clinc150's oos)"
    )
    oos_threshold: float | None = Field(
        None, ge=0, le=1, description="reject below this probability; None: tuned on validation"
    )
    oos_max_in_scope_drop: float = Field(
        0.005,
        ge=0,
        lt=1,
        description="tuning: the threshold with the best out-of-scope recall that costs at most this much "
        "in-scope accuracy (absolute) compared with no threshold",
    )
    top_k: int = Field(5, ge=1, description="labels returned with their scores")
    finetune_layers: int = Field(
        6, ge=1, description="finetune head: how many top encoder layers are trained (all: 6 for MiniLM-L6)"
    )
    finetune_embeddings: bool = Field(False, description="also train the token embeddings (slower; rarely helps)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="finetune head: label smoothing")
    head_scale: float = Field(20.0, gt=0, description="finetune head: the cosine classifier's scale")
    finetune_seeds: int = Field(
        1, ge=1, le=16, description="fine-tuned members from seeds seed, seed+1, ... averaged (each a full run)"
    )
    finetune_length_group: int = Field(
        8,
        ge=1,
        le=1000,
        description="batches drawn in runs of this many, each run sorted by length: less padding (1: random)",
    )
    finetune_bf16: bool = Field(
        False,
        description="fine-tune under bfloat16 autocast (weights and optimizer stay float32): ~1.9x faster on CPUs "
        "with AVX512-BF16 or AMX and on GPUs; slower where bf16 is emulated",
    )
    finetune_sources: dict[str, Annotated[int, Field(ge=1, le=16)]] = Field(
        default_factory=dict,
        description="more fine-tuned members from other encoders, {source: members}, e.g. "
        "{bundled:smollm2-135m-instruct: 1} (a decoder's hidden states are mean-pooled)",
    )
    encoder_layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        description="finetune head: keep only these layers of the encoder (0-based, e.g. [1, 3, 5]): a smaller, "
        "faster model; what `luodi optimize --method distill` trains",
    )
    pruned: list[PrunedEncoder] | None = Field(
        None,
        min_length=1,
        description="finetune head: the shapes of each member's pruned encoder (one entry per member), written "
        "by `luodi optimize --method prune`; loading builds them before reading the weights",
    )


class TokenClassificationOptions(Strict):
    """`model.options` of a token-classification app."""

    layers: list[int] = Field(default_factory=lambda: [3, 4, 5, 6], description="encoder layers mixed per word")
    context: Literal["conv", "lstm"] = Field(
        "conv", description="sentence context layer: 2 convolutions (fast) or a BiLSTM"
    )
    hidden: int = Field(256, ge=16, description="channels of the context layer (per direction for lstm)")
    char_dim: int = Field(32, ge=4, description="character embedding size")
    char_filters: int = Field(64, ge=4, description="character convolution filters")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout")
    max_length: int = Field(512, ge=16, le=512, description="sub-word tokens per sentence for the encoder")


class TextGenerationOptions(Strict):
    """`model.options` of a text-generation app (LoRA fine-tuning of a small chat model)."""

    r: int = Field(16, ge=1, le=256, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="the linear layers that get LoRA adapters",
    )
    system: str | None = Field(None, description="system prompt used for training, evaluation and replies")
    max_length: int = Field(256, ge=16, description="tokens per training dialogue (longer ones are cut)")
    max_train_dialogues: int | None = Field(
        400, ge=1, description="a slice keeps CPU training short; None: all"
    )
    max_eval_dialogues: int | None = Field(150, ge=1, description="dialogues scored by evaluate; None: all")
    max_new_tokens: int = Field(64, ge=1, le=1024, description="reply length limit")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints")
