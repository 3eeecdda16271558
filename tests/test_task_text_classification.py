"""text-classification on small real slices: learns, round-trips, rejects out-of-scope, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from luodi.config import validate_app
from luodi.errors import BadRequest, ConfigError
from luodi.tasks import task_for


def make_task(path, **over):
    raw = {"name": "t", "task": "text-classification", "data": {"path": str(path)}}
    for k, v in over.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    return task_for(validate_app(raw))  # bad keys: a ConfigError naming them


def banking_slice(datasets_dir, n_labels=8, per_label=40):
    task = make_task(datasets_dir / "banking77/train.csv", data={"columns": {"label": "category"}})
    df = task.read(None)
    keep = sorted(df.label.unique())[:n_labels]
    df = df[df.label.isin(keep)].groupby("label").head(per_label).reset_index(drop=True)
    return task, df


def test_banking_slice_learns_and_round_trips(datasets_dir, tmp_path):
    task, df = banking_slice(datasets_dir)
    train, valid = task.split(df)
    assert set(train.label) == set(valid.label)  # stratified
    assert task.fit(train, valid, tmp_path) is None  # callers score the validation rows with evaluate
    metrics = task.evaluate(valid)
    assert metrics["accuracy"] > 0.75  # 8 classes: chance is 0.125
    texts = [{"text": t} for t in valid.text[:10]]
    before = task.predict(texts)
    assert {"label", "score", "top_k"} <= set(before[0])
    assert before[0]["top_k"][0]["label"] == before[0]["label"]
    assert 0 <= before[0]["score"] <= 1
    task.save(tmp_path / "run")
    assert not list((tmp_path / "run").glob("*.pkl"))
    again = make_task(datasets_dir / "banking77/train.csv", data={"columns": {"label": "category"}})
    again.load(tmp_path / "run")
    after = again.predict(texts)
    assert [a["label"] for a in after] == [b["label"] for b in before]
    assert after[0]["score"] == pytest.approx(before[0]["score"], abs=1e-4)
    # evaluate accepts a file in the dataset's original format (text,category columns)
    f = tmp_path / "test.csv"
    valid.rename(columns={"label": "category"}).to_csv(f, index=False)
    m = again.evaluate(again.read(str(f)))
    assert m["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_tfidf_only_spam_filter(datasets_dir, tmp_path):
    task = make_task(
        datasets_dir / "sms-spam/SMSSpamCollection",
        data={"format": "sms"},
        model={"options": {"features": ["tfidf"]}},
    )
    df = task.read(None)
    assert set(df.label) == {"ham", "spam"}
    df = pd.concat([df[df.label == "spam"].head(150), df[df.label == "ham"].head(450)])
    train, valid = task.split(df)
    task.fit(train, valid, tmp_path)
    m = task.evaluate(valid)
    assert m["accuracy"] > 0.9
    out = task.predict([{"text": "WINNER!! You have won a free prize, call 09061701461 now to claim"}])
    assert out[0]["label"] == "spam"
    # `luodi predict --input`: lines of the dataset's own file, or plain text one message per line
    sms = tmp_path / "three.sms"
    sms.write_text("".join(f"{lab}\t{t}\n" for lab, t in zip(valid.label[:3], valid.text[:3], strict=True)))
    plain = tmp_path / "three.txt"
    plain.write_text("\n".join(valid.text[:3]) + "\n")
    direct = [r["label"] for r in task.predict([{"text": t} for t in valid.text[:3]])]
    assert [r["label"] for r in task.predict(task.read_input(str(sms)))] == direct
    assert [r["label"] for r in task.predict(task.read_input(str(plain)))] == direct
    records, sources = task.read_inputs(str(tmp_path))  # a folder: every file's texts, with their file
    assert sources == [str(sms)] * 3 + [str(plain)] * 3 and records == task.read_input(str(sms)) * 2


def test_text_prediction_inputs_in_every_format(tmp_path):
    """read_text_inputs: plain lines, SMSSpamCollection, a CSV naming the text column, JSON, JSON lines, CoNLL."""
    from luodi.data.text import read_text_inputs

    texts = ["my card has not arrived", "how do I top up, by card?", "WIN a prize now"]
    want = [{"text": t} for t in texts]
    files = {
        "a.txt": "\n".join(texts) + "\n\n",
        "a.sms": "".join(f"ham\t{t}\n" for t in texts),
        "a.csv": "text,category\n" + "".join(f'"{t}",x\n' for t in texts),
        "a.tsv": "label\tutterance\n" + "".join(f"x\t{t}\n" for t in texts),
        "a.json": json.dumps(texts),
        "b.json": json.dumps([{"text": t, "label": "x"} for t in texts]),
        "a.jsonl": "".join(json.dumps({"text": t}) + "\n" for t in texts),
    }
    for name, body in files.items():
        (tmp_path / name).write_text(body)
        column = "utterance" if name == "a.tsv" else "text"
        assert read_text_inputs(tmp_path / name, column) == want, name
    conll = tmp_path / "eng.testb"
    conll.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP I-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP I-PER\n")
    assert read_text_inputs(conll) == [{"text": "EU rejects"}, {"text": "Peter"}]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(BadRequest, match="no texts"):
        read_text_inputs(tmp_path / "empty.txt")
    with pytest.raises(BadRequest, match="no column 'text'"):
        read_text_inputs(tmp_path / "a.tsv")  # header without the text column: named, not guessed
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    with pytest.raises(BadRequest, match="is a binary file"):
        read_text_inputs(tmp_path / "photo.png")


def test_out_of_scope_threshold(datasets_dir, tmp_path):
    task = make_task(
        datasets_dir / "clinc150/data_full_trainval.json",
        data={"split": {"by": "part", "valid_parts": ["val", "oos_val"]}},
        model={"options": {"oos_label": "oos", "features": ["embeddings"]}},
    )
    df = task.read(None)
    assert {"train", "val", "oos_train", "oos_val"} == set(df.part)
    intents = sorted(set(df.label) - {"oos"})[:10]
    df = df[df.label.isin(intents) | (df.label == "oos")]
    df = pd.concat([df[df.part == "train"].groupby("label").head(30), df[df.part != "train"]])
    df = df[(df.part != "oos_train") | (df.label == "oos")]
    train, valid = task.split(df)
    assert set(valid.part) == {"val", "oos_val"}
    task.fit(train, valid, tmp_path)
    m = task.evaluate(valid)
    assert m["in_scope_accuracy"] > 0.7 and m["oos_recall"] > 0.5
    assert 0 <= task.oos_threshold < 1
    assert task.predict([{"text": "what is the melting point of tungsten in kelvin"}])[0]["label"] in (
        {"oos"} | set(intents)
    )
    # a clinc-style file with test keys reads as-is for `luodi evaluate --data`
    f = tmp_path / "clinc_test.json"
    f.write_text(json.dumps({"test": [["how do i freeze my card", intents[0]]], "oos_test": [["hi", "oos"]]}))
    assert list(task.read(str(f)).part) == ["test", "oos_test"]
    # the full upstream data_full.json (train, val and test keys): only its test parts are scored
    full = tmp_path / "data_full.json"
    full.write_text(json.dumps({"train": [["t", intents[0]]], "val": [["v", intents[0]]], "oos_val": [["o", "oos"]],
                                "test": [["how do i freeze my card", intents[0]]], "oos_test": [["hi", "oos"]]}))
    assert list(task.read(str(full)).part) == ["test", "oos_test"]


def test_clear_errors(datasets_dir, tmp_path):
    with pytest.raises(ConfigError, match="features"):
        make_task("x.csv", model={"options": {"features": ["bag"]}})
    with pytest.raises(ConfigError, match="model.options"):
        make_task("x.csv", model={"options": {"c_embedings": 3}})
    with pytest.raises(ConfigError, match="head_weights"):
        make_task("x.csv", model={"options": {"features": ["embeddings", "finetune"]}})
    with pytest.raises(ConfigError, match="one non-negative weight per feature"):
        make_task("x.csv", model={"options": {"features": ["finetune", "tfidf"], "head_weights": {"tfidf": 1}}})
    ft = {"features": ["finetune"], "finetune_sources": {str(tmp_path / "no-such-model"): 1}}
    with pytest.raises(ConfigError, match="model.options.finetune_sources.*not found"):
        make_task("x.csv", model={"options": ft})
    with pytest.raises(ConfigError, match="finetune_sources"):
        make_task("x.csv", model={"options": {**ft, "finetune_sources": {"bundled:minilm-l6": 0}}})
    with pytest.raises(BadRequest, match="not found"):
        make_task(tmp_path / "missing.csv").read(None)
    with pytest.raises(BadRequest, match="data.columns.label"):
        make_task(datasets_dir / "banking77/train.csv").read(None)  # label column is `category`
    task, df = banking_slice(datasets_dir, n_labels=3, per_label=10)
    with pytest.raises(BadRequest, match="not trained"):
        task.predict([{"text": "hello"}])
    task.fit(df, df.iloc[:0], tmp_path)
    with pytest.raises(BadRequest, match=r"records\[1\]\.text"):
        task.predict([{"text": "ok"}, {"txt": "typo"}])
    with pytest.raises(BadRequest, match="2 distinct labels"):
        task.fit(df[df.label == df.label[0]], df.iloc[:0], tmp_path)


def test_finetuned_encoder_learns_and_round_trips(datasets_dir, tmp_path):
    """The `finetune` head trains the encoder itself (bfloat16 autocast): one MiniLM member and one member from
    another encoder, the bundled SmolLM2 decoder; the saved run predicts exactly what the trained one did."""
    _, df = banking_slice(datasets_dir, n_labels=6, per_label=24)
    opts = {"features": ["finetune", "tfidf"], "tfidf_weight": 0.25, "max_length": 32, "finetune_layers": 2}
    opts.update(finetune_bf16=True, finetune_sources={"bundled:smollm2-135m-instruct": 1})
    over = {"data": {"columns": {"label": "category"}}, "model": {"options": opts}}
    task = make_task(datasets_dir / "banking77/train.csv", train={"epochs": 2, "lr": 3e-4, "batch_size": 16}, **over)
    train, valid = task.split(df)
    task.fit(train, valid, tmp_path / "work", progress=False)
    metrics = task.evaluate(valid)
    assert metrics["accuracy"] > 0.6  # 6 classes: chance is 0.17
    first, second = task.ft_model.members
    assert (tmp_path / "work" / "checkpoint" / "finetune-member-1" / "checkpoint" / "state.json").exists()
    assert first.head.in_features == 384 and second.head.in_features == 576  # MiniLM, then SmolLM2
    assert first.head.weight.dtype == torch.float32  # autocast: weights stay float32
    enc = first.encoder
    frozen = [p.requires_grad for p in enc.embeddings.parameters()] + [
        p.requires_grad for p in enc.encoder.layer[0].parameters()
    ]
    task_params = [p.requires_grad for p in enc.encoder.layer[-1].parameters()]
    assert not any(frozen) and all(task_params)  # finetune_layers: 2 trains only the top two layers
    trained = [n for n, p in second.encoder.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith(("layers.28.", "layers.29.", "norm.")) for n in trained)
    texts = [{"text": t} for t in valid.text]
    before = task.predict(texts)
    task.save(tmp_path / "run")
    again = make_task(datasets_dir / "banking77/train.csv", **over)
    again.load(tmp_path / "run")
    after = again.predict(texts)
    assert [a["label"] for a in after] == [b["label"] for b in before]
    assert after[0]["score"] == pytest.approx(before[0]["score"], abs=1e-5)
    assert (tmp_path / "run" / "finetuned-1.safetensors").exists()


def test_length_grouped_batches_cover_every_text_once_with_less_padding():
    from luodi.tasks.text_finetune import _Batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=1000)
    torch.manual_seed(0)
    plain = list(_Batches(1000, 32))
    grouped = _Batches(1000, 32, lengths, group=8)
    batches = list(grouped)
    assert len(batches) == len(grouped)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))

    def padded(bs: list[np.ndarray]) -> int:
        return sum(int(lengths[b].max()) * len(b) for b in bs)

    assert padded(batches) < 0.75 * padded(plain)
    torch.manual_seed(1)
    again = list(grouped)
    torch.manual_seed(1)
    assert all(np.array_equal(a, b) for a, b in zip(again, list(grouped), strict=True))  # resume replays an epoch

