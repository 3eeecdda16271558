"""LUODI_EMBED_RUNTIME: the bundled encoder on ONNX Runtime gives the embeddings torch gives (float32 exactly,
int8 within the cosine bound), for any batch size, and an empty list."""

from __future__ import annotations

import json

import numpy as np

from luodi.embeddings import Encoder
from luodi.encoder_onnx import CHECK_TEXTS

TEXTS = ["Where is my new card?", "ok", "The quarterly report shows revenue grew by 12 percent.",
         "How do I reset my online banking password after three failed attempts?"] * 3


def test_onnx_runtimes_match_torch():
    want = Encoder("bundled:minilm-l6", runtime="torch").encode(TEXTS)
    fp32 = Encoder("bundled:minilm-l6", runtime="onnx")
    got = fp32.encode(TEXTS, batch_size=5)
    assert got.shape == want.shape and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (got * want).sum(1).min() > 0.9999
    int8 = Encoder("bundled:minilm-l6", runtime="onnx-int8")
    # the bound holds on average over the check sentences; a two-letter text loses most (0.966 measured)
    torch_check = Encoder("bundled:minilm-l6", runtime="torch").encode(CHECK_TEXTS)
    assert (int8.encode(CHECK_TEXTS) * torch_check).sum(1).mean() >= 0.99
    assert (int8.encode(TEXTS) * want).sum(1).min() > 0.95
    verdict = json.loads((int8.onnx.path.parent / "int8.json").read_text())
    assert verdict["met"] and verdict["mean_cosine"] >= 0.99
    assert fp32.encode([]).shape == (0, fp32.dim)
