"""token-classification (NER): BIO spans and scores, a small real training run, round trip, errors."""

from __future__ import annotations

import pytest

from luodi.config import AppConfig
from luodi.data.text import iob1_to_bio, read_conll
from luodi.errors import BadRequest, ConfigError
from luodi.tasks import task_for
from luodi.tasks.bio_tags import allowed_transitions, entity_scores, spans, viterbi


def make_task(path, **over):
    raw = {
        "name": "ner",
        "task": "token-classification",
        "data": {"path": str(path)},
        "train": {"epochs": 4, "lr": 0.003, "batch_size": 16},
        "model": {"options": {"hidden": 64}},
    }
    for k, v in over.items():
        raw.setdefault(k, {}).update(v)
    return task_for(AppConfig.model_validate(raw))


def test_bio_helpers_match_seqeval():
    assert iob1_to_bio(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-LOC",
        "B-ORG",
    ]
    assert spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 5)]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-MISC", "O"]]
    m = entity_scores(gold, pred)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    seqeval = pytest.importorskip("seqeval.metrics")
    assert m["f1"] == pytest.approx(seqeval.f1_score(gold, pred))


def test_viterbi_never_starts_inside_an_entity():
    import numpy as np

    tags = ["O", "B-PER", "I-PER"]
    start, trans = allowed_transitions(tags)
    logp = np.log(np.array([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8]]))
    assert viterbi(logp, start, trans) == [1, 2]  # I-PER first is illegal: B-PER then I-PER


def test_conll_slice_learns_and_round_trips(datasets_dir, tmp_path):
    train_file = datasets_dir / "conll2003/eng.train"
    task = make_task(train_file)
    data = task.read(None)
    assert len(data) == 14041 and all(len(s["tokens"]) == len(s["tags"]) for s in data)
    train, valid = task.split(data[:700])
    assert task.fit(train, valid, tmp_path / "fit") is None  # callers score the validation rows with evaluate
    metrics = task.evaluate(valid)
    assert metrics["f1"] > 0.4  # entity-level exact match after a few epochs on 630 sentences
    assert metrics["token_accuracy"] > 0.9
    assert (tmp_path / "fit/checkpoint/state.json").exists()
    text = "Peter Blackburn met officials of the European Commission in Brussels on Monday ."
    out = task.predict([{"text": text}, {"text": "..."}])
    for e in out[0]["entities"]:
        assert text[e["start"] : e["end"]] == e["text"] and e["label"] in {"PER", "ORG", "LOC", "MISC"}
    assert out[1]["entities"] == []
    task.save(tmp_path / "run")
    again = make_task(train_file)
    again.load(tmp_path / "run")
    assert again.predict([{"text": text}]) == out[:1]
    assert again.evaluate(valid)["f1"] == pytest.approx(metrics["f1"])


def test_resume_continues_from_checkpoint(datasets_dir, tmp_path):
    task = make_task(datasets_dir / "conll2003/eng.testa", train={"epochs": 1})
    data = task.read(None)[:120]
    task.fit(data[:100], data[100:], tmp_path)
    more = make_task(datasets_dir / "conll2003/eng.testa", train={"epochs": 2})
    more.fit(data[:100], data[100:], tmp_path)  # picks up after epoch 1
    import json

    assert json.loads((tmp_path / "checkpoint/state.json").read_text())["epoch"] == 2


def test_clear_errors(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("EU NNP I-NP I-ORG\nrejects VBZ I-VP WHAT\n")
    with pytest.raises(BadRequest, match="bad.conll:2"):
        read_conll(bad)
    with pytest.raises(ConfigError, match="model.type"):
        make_task(bad, model={"type": "crf"})
    with pytest.raises(BadRequest, match="not trained"):
        make_task(bad).predict([{"text": "Paris"}])
    with pytest.raises(BadRequest, match=r"records\[0\]\.text"):
        make_task(bad).predict([{"tokens": ["Paris"]}])
