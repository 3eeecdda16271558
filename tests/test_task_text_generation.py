"""text-generation: a tiny LoRA run on real dialogues lowers perplexity, round-trips, replies, errors."""

from __future__ import annotations

import pytest

from luodi.config import validate_app
from luodi.data.text import clean_utterance, read_dialogues
from luodi.errors import BadRequest, ConfigError
from luodi.tasks import task_for


def make_task(path, **opts):
    raw = {
        "name": "style",
        "task": "text-generation",
        "data": {"path": str(path)},
        "model": {
            "source": "bundled:smollm2-135m-instruct",
            "type": "lora",
            "options": {"max_length": 96, "max_new_tokens": 12, **opts},
        },
        "train": {"epochs": 2, "lr": 0.002, "batch_size": 4},
    }
    return task_for(validate_app(raw))  # bad keys: a ConfigError naming them


def test_dailydialog_reader(datasets_dir):
    dialogues = read_dialogues(datasets_dir / "dailydialog/validation/dialogues_validation.txt")
    assert 900 < len(dialogues) <= 1000 and all(len(d) >= 2 for d in dialogues)
    assert (
        clean_utterance("Say , Jim , how about it ? I don't know .")
        == "Say, Jim, how about it? I don't know."
    )


def test_lora_lowers_perplexity_and_round_trips(datasets_dir, tmp_path):
    pytest.importorskip("luodi.models", reason="needs luodi.models")
    from luodi import models

    if not hasattr(models, "gguf_to_hf_dir"):
        pytest.skip("luodi.models.gguf_to_hf_dir (GGUF -> HF conversion) has not landed yet")
    task = make_task(datasets_dir / "dailydialog/validation/dialogues_validation.txt")
    data = task.read(None)[:16]
    assert task.fit(data, data[:8], tmp_path / "fit") is None  # learns the dialogues it sees
    metrics = task.evaluate(data[:8])
    assert metrics["perplexity"] < 0.9 * metrics["base_perplexity"]
    reply = task.predict([{"text": "Hi, how are you today?"}])[0]["reply"]
    assert isinstance(reply, str) and reply
    task.save(tmp_path / "run")
    assert (tmp_path / "run/adapter_model.safetensors").exists()
    again = make_task(datasets_dir / "dailydialog/validation/dialogues_validation.txt")
    again.load(tmp_path / "run")
    assert again.perplexity(data[:8]) == pytest.approx(metrics["perplexity"], rel=1e-3)
    assert (
        again.predict([{"messages": [{"role": "user", "content": "Hi, how are you today?"}]}])[0]["reply"]
        == reply
    )


def test_clear_errors(tmp_path):
    bad = tmp_path / "d.txt"
    bad.write_text("no separators here\n")
    with pytest.raises(BadRequest, match="__eou__"):
        read_dialogues(bad)
    with pytest.raises(ConfigError, match="model.options"):
        make_task(bad, rank=4)
    with pytest.raises(BadRequest, match="not trained"):
        make_task(bad).predict([{"text": "hi"}])
