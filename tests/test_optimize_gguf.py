"""luodi optimize --method gguf on a tiny dialogue-style LoRA app: the adapter merged into a GGUF whose held-out
perplexity matches transformers', served by the llama.cpp engine on /v1/chat/completions under the app's name."""

from __future__ import annotations

import json

import pytest
import yaml

from luodi import api
from luodi.apps.optimize import optimize
from luodi.apps.registry import get_run, verify_manifest

APP = "gguf-dialogue"


@pytest.fixture(scope="module")
def gguf_app(datasets_dir, tmp_path_factory):
    """A LoRA (r 4, 1 epoch) on 24 DailyDialog dialogues, then its GGUF run (the one the app serves)."""
    folder = tmp_path_factory.mktemp("optimize-gguf")
    app = {
        "name": APP,
        "task": "text-generation",
        "data": {"path": str(datasets_dir / "dailydialog/validation/dialogues_validation.txt"),
                 "split": {"valid": 0.2, "seed": 0}},
        "model": {"source": "bundled:smollm2-135m-instruct", "type": "lora",
                  "options": {"r": 4, "alpha": 8, "max_length": 64, "max_train_dialogues": 24,
                              "max_eval_dialogues": 8, "max_new_tokens": 6}},
        "train": {"epochs": 1, "lr": 0.002, "batch_size": 8},
        "evaluate": {"metrics": ["perplexity"]},
        "optimize": {"calibration_rows": 16, "latency_rows": 10, "throughput_rows": 32},  # their minimums
    }
    path = folder / "app.yaml"
    path.write_text(yaml.safe_dump(app))
    base = api.train(str(path), progress=False)
    res = optimize(str(path), "gguf", version=base.version)
    return {"yaml": str(path), "base": base, "result": res}


def test_gguf_run_matches_transformers_perplexity(gguf_app):
    res = gguf_app["result"]
    run = get_run(APP, res["run"]["version"])
    assert run.status == "done" and (run.path / "model.gguf").is_file()
    verify_manifest(run.path)
    details = res["details"]
    assert details["method"] == "gguf" and details["n_dialogues"] > 0
    assert abs(details["gguf_perplexity"] / details["transformers_perplexity"] - 1) <= 0.03, details
    meta = json.loads((run.path / "text_generation.json").read_text())
    assert meta["served_as"] == "gguf" and meta["gguf"] == "model.gguf"
    table = res["table"]
    assert table["rows"]["optimized"]["quality"] == pytest.approx(details["gguf_perplexity"], rel=1e-3)
    # the app's own predict route answers from the GGUF too
    out = api.predict(gguf_app["yaml"], [{"text": "Hi, how are you today?"}])
    reply = out[0]["reply"] if isinstance(out, list) else out["predictions"][0]["reply"]
    assert isinstance(reply, str)


def test_chat_completions_serve_the_app_by_name(gguf_app, live_server):
    import openai

    client = live_server.openai()
    with pytest.raises(openai.NotFoundError):  # optimized, not promoted yet: the app serves its LoRA run
        client.chat.completions.create(model=APP, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    api.promote(APP, gguf_app["result"]["run"]["version"])
    listed = {m.id for m in client.models.list().data}
    assert APP in listed
    reply = client.chat.completions.create(
        model=APP, messages=[{"role": "user", "content": "Hi, how are you today?"}], max_tokens=8, temperature=0
    )
    assert reply.model == APP and reply.choices[0].message.content
    assert reply.usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
