"""Encryption at rest (luodi.crypto, luodi.store.encrypted, luodi.rekey): the chunked AES-256-GCM format refuses
every tampering, store columns round-trip, and, on real parts, a trained app, a knowledge base, conversations and
tickets are stored encrypted, still work, and survive a key rotation that is killed half-way."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from luodi import crypto
from luodi.crypto import DamagedFileError, EncryptionKeyError

KEY1 = crypto.Key(bytes(range(32)))
KEY2 = crypto.Key(bytes(range(100, 132)))
OTHER = crypto.Key(os.urandom(32))


def _reset() -> None:
    from luodi.apps.predict import forget_loaded
    from luodi.rag import index
    from luodi.settings import reset_settings
    from luodi.store.db import reset_engines

    reset_settings()
    reset_engines()
    forget_loaded()
    index._cache.clear()


@pytest.fixture
def iso_home(tmp_path, monkeypatch):
    """A LUODI_HOME of its own (so nothing here touches other tests' runs and store), key 1 set."""
    monkeypatch.setenv("LUODI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY", KEY1.secret.hex())
    monkeypatch.delenv("LUODI_ENCRYPTION_KEY_FILE", raising=False)
    _reset()
    yield tmp_path / "home"
    monkeypatch.undo()
    _reset()


# ---- the file format --------------------------------------------------------------------------------------

DATA = bytes(range(256)) * 2 + b"tail"  # 516 bytes: 8 chunks of 64 and a last one of 4


def _refused(tmp_path: Path, blob: bytes, what: str) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(blob)
    for read in (crypto.read_bytes, crypto.read_bytes_streamed):
        with pytest.raises((DamagedFileError, EncryptionKeyError)) as e:
            got = read(p)
            pytest.fail(f"{what}: read {len(got)} bytes instead of refusing")
        assert str(p) in e.value.message and ("damaged" in e.value.message or "key id" in e.value.message), what


def _chunks(blob: bytes, chunk: int) -> tuple[bytes, list[bytes]]:
    head, body, size = blob[: crypto.HEADER.size], blob[crypto.HEADER.size :], chunk + crypto.TAG
    return head, [body[i : i + size] for i in range(0, len(body), size)]


def test_round_trip_sizes_and_plaintext_passthrough(tmp_path):
    p = tmp_path / "f"
    with crypto.using_keys(KEY1):
        for n in (0, 1, 63, 64, 65, 128, 516, 70_000):
            data = os.urandom(n)
            blob = crypto.seal_bytes(data, KEY1, chunk=64)
            assert blob.startswith(crypto.MAGIC) and data[:16] not in blob[crypto.HEADER.size :] or n < 16
            p.write_bytes(blob)
            assert crypto.read_bytes(p) == data and crypto.read_bytes_streamed(p) == data, n
            assert crypto.key_id_of(p) == KEY1.id
        p.write_bytes(b'{"plain": "json written before encryption was on"}')  # a key set: still read as is
        assert crypto.read_json(p) == {"plain": "json written before encryption was on"}


def test_every_bit_flip_is_refused(tmp_path):
    blob = crypto.seal_bytes(DATA, KEY1, chunk=64)
    with crypto.using_keys(KEY1):
        for i in range(len(blob)):  # every bit of the header, one bit (in turn) of every other byte
            for bit in range(8) if i < crypto.HEADER.size else [i % 8]:
                b = bytearray(blob)
                b[i] ^= 1 << bit
                _refused(tmp_path, bytes(b), f"bit {bit} of byte {i} flipped")


def test_truncation_reorder_drop_swap_and_append_are_refused(tmp_path):
    blob = crypto.seal_bytes(DATA, KEY1, chunk=64)
    other = crypto.seal_bytes(DATA, KEY1, chunk=64)  # same key and plaintext, its own file id
    head, chunks = _chunks(blob, 64)
    ohead, ochunks = _chunks(other, 64)
    assert len(chunks) == 9
    cases: dict[str, bytes] = {}
    for n in range(1, len(blob)):
        cases[f"truncated to {n} bytes"] = blob[:n]
    for i in range(len(chunks)):
        cases[f"chunk {i} dropped"] = head + b"".join(chunks[:i] + chunks[i + 1 :])
        cases[f"chunk {i} doubled"] = head + b"".join(chunks[: i + 1] + chunks[i:])
        cases[f"chunk {i} from another file"] = head + b"".join(chunks[:i] + [ochunks[i]] + chunks[i + 1 :])
        for j in range(i + 1, len(chunks)):
            swapped = list(chunks)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            cases[f"chunks {i} and {j} swapped"] = head + b"".join(swapped)
    cases["chunks reversed"] = head + b"".join(reversed(chunks))
    cases["header of another file"] = ohead + b"".join(chunks)
    cases["one byte appended"] = blob + b"\x00"
    cases["last chunk appended again"] = blob + chunks[-1]
    cases["a full chunk appended"] = blob + chunks[0]
    cases["another file appended"] = blob + other
    cases["last chunk cut at a chunk boundary"] = head + b"".join(chunks[:-1])
    with crypto.using_keys(KEY1):
        for what, bad in cases.items():
            _refused(tmp_path, bad, what)
    assert len(cases) > len(blob) + 50


def test_missing_and_wrong_key_name_the_setting(tmp_path, iso_home, monkeypatch):
    p = tmp_path / "f"
    p.write_bytes(crypto.seal_bytes(b"secret", KEY1))
    assert crypto.read_bytes(p) == b"secret"
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY", OTHER.secret.hex())
    _reset()
    with pytest.raises(EncryptionKeyError, match=f"key id {KEY1.id_hex}.*LUODI_ENCRYPTION_KEY"):
        crypto.read_bytes(p)
    monkeypatch.delenv("LUODI_ENCRYPTION_KEY")
    _reset()
    with pytest.raises(EncryptionKeyError, match="no encryption key is set.*LUODI_ENCRYPTION_KEY"):
        crypto.read_bytes(p)
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY", "too-short")
    _reset()
    with pytest.raises(EncryptionKeyError, match="LUODI_ENCRYPTION_KEY is not a 32-byte key"):
        crypto.read_bytes(p)


def test_key_formats_and_key_file(tmp_path, iso_home, monkeypatch):
    assert crypto.parse_key(KEY1.secret.hex(), "x").id == KEY1.id
    assert crypto.parse_key(base64.b64encode(KEY1.secret).decode(), "x").id == KEY1.id
    f = tmp_path / "raw.key"
    f.write_bytes(KEY1.secret)
    monkeypatch.delenv("LUODI_ENCRYPTION_KEY")
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY_FILE", str(f))
    _reset()
    assert crypto.keyring().primary.id == KEY1.id
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY_FILE", str(tmp_path / "missing.key"))
    _reset()
    with pytest.raises(EncryptionKeyError, match="LUODI_ENCRYPTION_KEY_FILE: cannot read key file"):
        crypto.keyring()


def test_atomic_writes_under_protected_folders_are_sealed(iso_home):
    from luodi import atomic
    from luodi.settings import get_settings

    s = get_settings()
    run_file, kb_file, other = s.runs_dir / "a/v1/m.json", s.home / "kb/docs/x.json", s.cache_dir / "c.json"
    for p in (run_file, kb_file, other):
        atomic.write_json(p, {"labels": ["card_arrival"]})
    assert crypto.is_sealed(run_file) and crypto.is_sealed(kb_file) and not crypto.is_sealed(other)
    assert b"card_arrival" not in run_file.read_bytes()
    assert crypto.read_json(run_file) == {"labels": ["card_arrival"]}
    with atomic.atomic_path(s.runs_dir / "a/v1/w.safetensors") as tmp:  # a library writing a path itself
        import numpy as np
        from safetensors.numpy import load, save_file

        save_file({"w": np.arange(4, dtype=np.float32)}, str(tmp))
        assert not str(tmp).startswith(str(s.runs_dir))  # the plaintext is written outside the runs folder
    assert crypto.is_sealed(s.runs_dir / "a/v1/w.safetensors")
    assert load(crypto.read_bytes(s.runs_dir / "a/v1/w.safetensors"))["w"].tolist() == [0, 1, 2, 3]
    assert not list((s.runs_dir / "a/v1").glob(".*"))  # no temp left behind


def test_folder_and_handle_views_for_libraries_that_open_paths(iso_home):
    """peft reads an adapter folder and llama.cpp a GGUF path themselves: they get the plaintext in memory."""
    from luodi import atomic
    from luodi.settings import get_settings

    run = get_settings().runs_dir / "g/v1"
    atomic.write_json(run / "adapter_config.json", {"r": 8})
    atomic.write_bytes(run / "model.gguf", b"GGUF" + bytes(range(256)) * 300)
    with crypto.plain_dir(run, ["adapter_config.json", "absent.bin"]) as d:
        assert d != run and (d / "adapter_config.json").read_text().strip() == '{\n  "r": 8\n}'
    assert not d.exists()
    h = crypto.plain_handle(run / "model.gguf")
    assert h.read_bytes() == b"GGUF" + bytes(range(256)) * 300 and crypto.plain_handle(run / "model.gguf") == h
    plain = run.parent / "plain.json"
    plain.write_text("{}")
    assert crypto.plain_handle(plain) == plain
    with crypto.plain_dir(run.parent, ["plain.json"]) as d:
        assert d == run.parent


def test_torch_weights_load_from_encrypted_files(iso_home):
    """luodi.train.torch_loop.load_weights on an encrypted file: the decrypted memory becomes the model's tensors,
    or, for a model that shares a tensor under two names, each piece is copied in place; both equal the saved."""
    import torch

    from luodi.errors import ConfigError
    from luodi.settings import get_settings
    from luodi.train.torch_loop import load_weights, save_weights

    def plain() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))

    def tied() -> torch.nn.Module:
        m = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50, bias=False))
        m[1].weight = m[0].weight
        return m

    torch.manual_seed(0)
    run = get_settings().runs_dir / "t/v1"
    for make in (plain, tied):
        model = make()
        if make is plain:  # a buffer too
            model[1].running_mean.copy_(torch.randn(3))
        save_weights(model, run / "w.safetensors")
        assert crypto.is_sealed(run / "w.safetensors")
        fresh = make()
        load_weights(fresh, run / "w.safetensors")
        for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
        assert fresh[0].weight.requires_grad
    with pytest.raises(ConfigError, match="do not fit"):
        load_weights(torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3)), run / "w.safetensors")
    blob = bytearray((run / "w.safetensors").read_bytes())
    blob[-5] ^= 1
    (run / "w.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DamagedFileError, match="w.safetensors"):
        load_weights(tied(), run / "w.safetensors")


# ---- store columns ----------------------------------------------------------------------------------------


def test_ticket_and_conversation_columns_round_trip_encrypted(iso_home, monkeypatch):
    from luodi.agent.assistant.tickets import answer_ticket, create_ticket, get_ticket
    from luodi.agent.memory import add_message, create_thread, get_thread
    from luodi.store import session_scope

    monkeypatch.delenv("LUODI_ENCRYPTION_KEY")
    _reset()
    old = create_thread("assistant", state={"slot": "written before encryption"})  # plaintext row, kept readable
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY", KEY1.secret.hex())
    _reset()
    tid = create_thread("assistant", state={"account": "DE89 3704 0044 0532 0130 00"})
    add_message(tid, "user", "my card 4111 1111 1111 1111 was stolen", {"pii": ["CARD"]})
    ticket = create_ticket(tid, "Stolen card " + "x" * 600, "customer reports a stolen card 4111 1111 1111 1111")
    answer_ticket(ticket, "We blocked the card ending 1111.")
    with session_scope() as s:
        raw = [tuple(r) for r in s.execute(text("SELECT content, meta FROM messages")).all()]
        raw += [tuple(r) for r in s.execute(text("SELECT subject, body, answer FROM tickets")).all()]
        raw += [tuple(r) for r in s.execute(text("SELECT state FROM threads WHERE id = :i"), {"i": tid}).all()]
    for row in raw:
        for v in row:
            assert "ldenc1:" + KEY1.id_hex in v and "4111" not in v and "DE89" not in v, v
    assert len(raw[1][0]) <= 500  # the subject still fits its String(500) column
    t = get_ticket(ticket)
    assert t["body"].endswith("4111 1111 1111 1111") and t["answer"] == "We blocked the card ending 1111."
    assert t["subject"].startswith("Stolen card xxx")
    th = get_thread(tid)
    assert th["state"] == {"account": "DE89 3704 0044 0532 0130 00"}
    assert th["messages"][0]["content"] == "my card 4111 1111 1111 1111 was stolen"
    assert get_thread(old)["state"] == {"slot": "written before encryption"}
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY", OTHER.secret.hex())
    _reset()
    with pytest.raises(EncryptionKeyError, match=r"tickets\.\w+ was encrypted with key id.*LUODI_ENCRYPTION_KEY"):
        get_ticket(ticket)
    with session_scope() as s:  # a value moved to another column fails authentication
        body = s.execute(text("SELECT body FROM tickets")).scalar()
        s.execute(text("UPDATE tickets SET answer = :b"), {"b": body})
    monkeypatch.setenv("LUODI_ENCRYPTION_KEY", KEY1.secret.hex())
    _reset()
    with pytest.raises(DamagedFileError, match="tickets.answer"):
        get_ticket(ticket)


# ---- real parts: a trained app, a knowledge base, a rotation killed half-way ------------------------------

DOCS = {
    "lighthouse.txt": "The lighthouse at Port Aven was built in 1872 by the engineer Marie Kerlan. "
    "Its lamp can be seen from 40 kilometres out at sea.",
    "bakery.txt": "The Golden Crust bakery opens at six in the morning. Its sourdough loaf is fermented for thirty "
    "hours before baking.",
    "chess.txt": "The city chess club meets every Thursday evening in the old library. Beginners get a free lesson "
    "from the club champion, Ana Petrov.",
}


@pytest.fixture(scope="module")
def world(datasets_dir, tmp_path_factory):
    """Under key 1 in a home of its own: a small banking77 app trained, a KB ingested, a ticket and a thread."""
    from conftest import banking_slice_app

    from luodi import rag
    from luodi.agent.assistant.tickets import create_ticket
    from luodi.agent.memory import add_message, create_thread

    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("enc-world")
    mp.setenv("LUODI_HOME", str(home / "home"))
    mp.setenv("LUODI_ENCRYPTION_KEY", KEY1.secret.hex())
    _reset()
    folder = home / "app"
    folder.mkdir()
    app = banking_slice_app(datasets_dir, folder, "enc-bank", {"features": ["embeddings", "tfidf"]})
    docs = home / "docs"
    docs.mkdir()
    for name, body in DOCS.items():
        (docs / name).write_text(body)
    rag.create_kb("enc-kb")
    rag.add_documents("enc-kb", [str(docs)])
    tid = create_thread("assistant", state={"customer": "Ana Petrov"})
    add_message(tid, "user", "Where is my replacement card, Ana Petrov asks")
    ticket = create_ticket(tid, "Replacement card", "Ana Petrov waits for her replacement card")
    yield {"app": app, "home": home / "home", "thread": tid, "ticket": ticket, "mp": mp}
    mp.undo()
    _reset()


def _sealed_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != "write.lock"]


def _assert_world_works(world) -> None:
    from luodi import api, rag
    from luodi.agent.assistant.tickets import get_ticket
    from luodi.agent.memory import get_thread
    from luodi.apps import registry

    _reset()
    run = world["app"]["base"]
    registry.verify_manifest(Path(run.path))
    texts = world["app"]["texts"]
    import pandas as pd

    df = pd.read_csv(Path(world["app"]["folder"]) / "bank6.csv")
    got = api.predict(world["app"]["yaml"], [{"text": t} for t in texts])
    acc = sum(g["label"] == y for g, y in zip(got, df.category, strict=True)) / len(texts)
    assert acc >= 0.8, acc  # trained texts, 6 intents
    hits = rag.search("enc-kb", "When does the bakery open?", k=1).hits
    assert hits and "Golden Crust" in hits[0].text
    assert get_ticket(world["ticket"])["body"] == "Ana Petrov waits for her replacement card"
    assert get_thread(world["thread"])["state"] == {"customer": "Ana Petrov"}


def test_trained_app_and_kb_are_stored_encrypted_and_work(world):
    from luodi.apps import registry

    _assert_world_works(world)
    run_dir = Path(world["app"]["base"].path)
    files = _sealed_files(run_dir)
    assert {"model.safetensors", "manifest.json", "config.yaml", "text_classification.json"} <= {p.name for p in files}
    labels = [b"activate_my_card", b"age_limit", b"atm_support"]
    for p in files + _sealed_files(world["home"] / "kb"):
        raw = p.read_bytes()
        assert crypto.is_sealed(p), p
        for needle in [*labels, b'"labels"', b'"heads"', b"sha256", b"Golden Crust", b"lighthouse"]:
            assert needle not in raw, (p, needle)
    db = b"".join(p.read_bytes() for p in world["home"].glob("luodi.db*"))
    assert b"Golden Crust" not in db and b"Ana Petrov" not in db
    assert registry.verify_manifest(run_dir)["files"]


def test_encrypted_run_refuses_damage_and_missing_key(world):
    from luodi import api
    from luodi.apps import registry

    run_dir = Path(world["app"]["base"].path)
    model = run_dir / "model.safetensors"
    original = model.read_bytes()
    try:
        b = bytearray(original)
        b[len(b) // 2] ^= 0x10
        model.write_bytes(bytes(b))
        with pytest.raises(DamagedFileError, match="model.safetensors.*damaged"):
            crypto.read_bytes(model)
        with pytest.raises(registry.RunIntegrityError, match="model.safetensors"):
            registry.verify_manifest(run_dir)
    finally:
        model.write_bytes(original)
    world["mp"].delenv("LUODI_ENCRYPTION_KEY")
    _reset()
    try:
        with pytest.raises(EncryptionKeyError, match="no encryption key is set.*LUODI_ENCRYPTION_KEY"):
            api.predict(world["app"]["yaml"], [{"text": "my card has not arrived"}])
    finally:
        world["mp"].setenv("LUODI_ENCRYPTION_KEY", KEY1.secret.hex())
        _reset()


def test_rotation_killed_half_way_finishes_on_rerun(world, tmp_path):
    from luodi.store import session_scope
    from luodi.store.encrypted import ENCRYPTED_COLUMNS

    env = {**os.environ, "LUODI_HOME": str(world["home"]), "LUODI_ENCRYPTION_KEY": KEY1.secret.hex()}
    kill = textwrap.dedent(f"""
        import os
        from luodi import crypto, rekey
        new = crypto.Key(bytes.fromhex("{KEY2.secret.hex()}"))
        rekey.rotate(new, [crypto.configured_key()], lambda p, n: os._exit(7) if n == 4 else None)
    """)
    r = subprocess.run([sys.executable, "-c", kill], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 7, r.stderr[-2000:]
    ids = {crypto.key_id_of(p) for p in _sealed_files(world["home"] / "runs") + _sealed_files(world["home"] / "kb")}
    assert ids == {KEY1.id, KEY2.id}  # killed half-way: some files under each key
    keyfile = tmp_path / "new.key"
    keyfile.write_text(base64.b64encode(KEY2.secret).decode())
    cli = [sys.executable, "-c", "from luodi.cli import main; main()", "keys", "rotate-encryption",
           "--new-key-file", str(keyfile)]
    r = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "done:" in r.stdout, r.stdout + r.stderr[-2000:]
    done = r.stdout.split("done:")[1]
    assert int(done.split()[0]) > 0 and int(done.split(",")[1].split()[0]) >= 4, r.stdout  # rest done, 4 kept

    world["mp"].setenv("LUODI_ENCRYPTION_KEY", KEY2.secret.hex())  # the new key only
    try:
        _assert_world_works(world)
        for p in _sealed_files(world["home"] / "runs") + _sealed_files(world["home"] / "kb"):
            assert crypto.key_id_of(p) == KEY2.id, p
        with session_scope() as s:
            for table, cols in ENCRYPTED_COLUMNS.items():
                for row in s.execute(text(f"SELECT {', '.join(cols)} FROM {table}")).all():
                    for v in row:
                        assert v is None or KEY2.id_hex in v, (table, v)
        world["mp"].setenv("LUODI_ENCRYPTION_KEY", KEY1.secret.hex())  # the old key alone no longer opens it
        _reset()
        with pytest.raises(EncryptionKeyError, match=f"key id {KEY2.id_hex}"):
            crypto.read_bytes(Path(world["app"]["base"].path) / "model.safetensors")
    finally:
        world["mp"].setenv("LUODI_ENCRYPTION_KEY", KEY1.secret.hex())
        _reset()
