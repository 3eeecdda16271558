"""Knowledge bases: readers, chunking, crash-safe incremental ingest, hybrid retrieval, cited answers, eval.

Real parts only: the bundled encoder, real SQLite, real FAISS/BM25, the bundled LLM for answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from luodi import rag
from luodi.errors import BadRequest, NotFound
from luodi.rag.chunk import chunk_text
from luodi.rag.readers import extract_text

FACTS = {
    "lighthouse.pdf": [
        "The lighthouse at Port Aven was built in 1872 by the engineer Marie Kerlan.",
        "Its lamp can be seen from 40 kilometres out at sea.",
    ],
    "glacier.docx": [
        "The Vatna glacier lost three metres of ice thickness during the summer of 2020.",
        "Scientists measure it every August with drones.",
    ],
    "bakery.html": [
        "The Golden Crust bakery opens at six in the morning.",
        "Its sourdough loaf is fermented for thirty hours before baking.",
    ],
    "volcano.md": [
        "# Mount Tereth",
        "",
        "Mount Tereth last erupted in 1911.",
        "The eruption covered the village of Ossan with ash.",
    ],
    "chess.txt": [
        "The city chess club meets every Thursday evening in the old library.",
        "Beginners get a free lesson from the club champion, Ana Petrov.",
    ],
}


def make_pdf(path: Path, lines: list[str]) -> None:
    """A one-page PDF with real text objects, written with pypdf."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    w = PdfWriter()
    page = w.add_blank_page(612, 792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    fonts = DictionaryObject({NameObject("/F1"): w._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    body = " ".join(f"({line}) Tj T*" for line in lines)
    stream = DecodedStreamObject()
    stream.set_data(f"BT /F1 11 Tf 14 TL 72 720 Td {body} ET".encode())
    page[NameObject("/Contents")] = w._add_object(stream)
    with open(path, "wb") as f:
        w.write(f)


def make_docx(path: Path, lines: list[str]) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Glacier report", 1)
    for line in lines:
        d.add_paragraph(line)
    d.save(path)


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    make_pdf(root / "lighthouse.pdf", FACTS["lighthouse.pdf"])
    make_docx(root / "glacier.docx", FACTS["glacier.docx"])
    html = "".join(f"<p>{s}</p>" for s in FACTS["bakery.html"])
    (root / "bakery.html").write_text(
        f"<html><head><title>Bakery</title><script>var x = 1;</script></head>"
        f"<body><h1>Golden Crust</h1>{html}</body></html>"
    )
    sub = root / "notes"
    sub.mkdir(exist_ok=True)
    (sub / "volcano.md").write_text("\n".join(FACTS["volcano.md"]) + "\n")
    (sub / "chess.txt").write_text(" ".join(FACTS["chess.txt"]) + "\n")
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def kb(corpus) -> str:
    name = "facts"
    rag.create_kb(name)
    report = rag.add_documents(name, [corpus])
    assert len(report.added) == 5 and not report.failed
    return name


# ------------------------------------------------------------------------------------------- readers / chunks


def test_readers_extract_text_of_every_format(corpus):
    for fname, lines in FACTS.items():
        path = next(corpus.rglob(fname))
        text = extract_text(fname, path.read_bytes())
        for line in lines:
            if line.strip("# "):
                assert line.strip("# ") in text, (fname, text)
    html = extract_text("bakery.html", (corpus / "bakery.html").read_bytes())
    assert "var x" not in html and "Bakery" in html
    with pytest.raises(BadRequest, match="unsupported document type"):
        extract_text("x.exe", b"MZ")
    with pytest.raises(BadRequest, match="PDF"):
        extract_text("broken.pdf", b"%PDF-1.4 not really")


def test_chunks_keep_spans_and_overlap():
    text = " ".join(f"Sentence number {i} talks about topic {i} in some detail." for i in range(40))
    chunks = chunk_text(text, max_tokens=40, overlap=1)
    assert len(chunks) > 5
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert text[a.start : a.end] == a.text
        assert b.start < a.end  # the last sentence of a chunk opens the next one
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    no_overlap = chunk_text(text, max_tokens=40, overlap=0)
    assert all(b.start > a.end - 1 for a, b in zip(no_overlap, no_overlap[1:], strict=False))


# ------------------------------------------------------------------------------------------- ingest


def test_ingest_all_formats_and_list(kb):
    info = rag.get_kb(kb)
    assert info["documents"] == 5 and info["chunks"] >= 5
    docs = rag.list_documents(kb)
    assert {Path(d["source"]).name for d in docs} == set(FACTS)
    assert all(d["status"] == "indexed" for d in docs)
    assert kb in [k["name"] for k in rag.list_kbs()]


def test_readd_is_deduplicated_by_content(kb, corpus, tmp_path):
    again = rag.add_documents(kb, [corpus])
    assert again.added == [] and len(again.skipped) == 5
    copy = tmp_path / "copy-of-chess.txt"
    shutil.copy(next(corpus.rglob("chess.txt")), copy)
    assert rag.add_documents(kb, [copy]).skipped == [str(copy.resolve())]
    assert rag.get_kb(kb)["documents"] == 5


def test_changed_file_replaces_its_old_version(tmp_path):
    rag.create_kb("replace")
    f = tmp_path / "policy.txt"
    f.write_text("Refunds are possible within 14 days of purchase.")
    rag.add_documents("replace", [f])
    f.write_text("Refunds are possible within 30 days of purchase, with the receipt.")
    r = rag.add_documents("replace", [f])
    assert r.replaced == [str(f.resolve())]
    docs = rag.list_documents("replace")
    assert len(docs) == 1
    hit = rag.search("replace", "How many days do I have for a refund?", k=1).hits[0]
    assert "30 days" in hit.text


def test_tampered_index_file_is_refused_by_name(tmp_path):
    from luodi.atomic import sha256_file
    from luodi.rag import index
    from luodi.rag.kbs import kb_dir

    rag.create_kb("tamper")
    f = tmp_path / "note.txt"
    f.write_text("The night ferry to Lindholm leaves at eleven.")
    rag.add_documents("tamper", [f])
    path = kb_dir("tamper") / index.INDEX_FILE
    sums = kb_dir("tamper") / index.SUMS_FILE
    assert json.loads(sums.read_text())["sha256"] == [sha256_file(path)]
    good = path.read_bytes()
    data = bytearray(good)
    data[-5] ^= 0x01  # one bit of one stored vector
    path.write_bytes(bytes(data))
    index.forget("tamper")
    with pytest.raises(index.KbIntegrityError, match=r"vectors\.faiss.*modified outside luodi") as e:
        rag.search("tamper", "When does the ferry leave?")
    assert e.value.status == 409
    (tmp_path / "more.txt").write_text("The day ferry leaves at nine.")
    with pytest.raises(index.KbIntegrityError):  # adding documents reads the index too: refused
        rag.add_documents("tamper", [tmp_path / "more.txt"])
    path.write_bytes(good)  # restored from a backup: served again
    assert "eleven" in rag.search("tamper", "When does the ferry leave?", k=1).hits[0].text
    sums.unlink()  # an index written before checksums existed: accepted once, its checksum recorded
    index.forget("tamper")
    assert rag.search("tamper", "ferry", k=1).hits
    assert json.loads(sums.read_text())["sha256"] == [sha256_file(path)]


def test_bad_input_names_the_field(tmp_path):
    with pytest.raises(BadRequest, match="invalid knowledge base name"):
        rag.create_kb("Bad Name!")
    with pytest.raises(NotFound, match="luodi kb create"):
        rag.add_documents("nope", [tmp_path])
    rag.create_kb("empty")
    with pytest.raises(BadRequest, match="already exists"):
        rag.create_kb("empty")
    with pytest.raises(BadRequest, match="does not exist"):
        rag.add_documents("empty", [tmp_path / "missing"])
    with pytest.raises(BadRequest, match="query"):
        rag.search("empty", "   ")
    assert rag.search("empty", "anything").hits == []


CRASH = """
import os, sys
import luodi.rag.ingest as ing
real = ing.write_vectors
def write_then_die(name, index):
    real(name, index)          # the vectors are on disk ...
    os._exit(9)                # ... and the process dies before the documents are marked indexed
ing.write_vectors = write_then_die
from luodi import rag
rag.add_documents("crashy", [sys.argv[1]])
"""


def test_killed_ingest_is_invisible_then_resumes(tmp_path, luodi_home):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Penguins live mostly in the Southern Hemisphere.")
    rag.create_kb("crashy")
    rag.add_documents("crashy", [docs / "a.txt"])
    (docs / "b.txt").write_text("The Okavango delta floods every winter.")
    env = {**os.environ, "LUODI_HOME": str(luodi_home)}
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH), str(docs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 9, p.stderr
    statuses = {Path(d["source"]).name: d["status"] for d in rag.list_documents("crashy")}
    assert statuses == {"a.txt": "indexed", "b.txt": "pending"}  # half-done, and visible as such
    assert rag.get_kb("crashy")["documents"] == 1
    res = rag.search("crashy", "When does the Okavango delta flood?", k=5)
    assert all(Path(h.source).name == "a.txt" for h in res.hits)  # never served half-indexed
    r = rag.add_documents("crashy", [docs])
    assert r.recovered == 1 and [Path(s).name for s in r.added] == ["b.txt"] and len(r.skipped) == 1
    hit = rag.search("crashy", "When does the Okavango delta flood?", k=1).hits[0]
    assert Path(hit.source).name == "b.txt"
    assert {d["status"] for d in rag.list_documents("crashy")} == {"indexed"}


# ------------------------------------------------------------------------------------------- retrieval


QUESTIONS = {
    "Who built the lighthouse at Port Aven?": "lighthouse.pdf",
    "How far away is the lamp visible?": "lighthouse.pdf",
    "How much ice did the Vatna glacier lose?": "glacier.docx",
    "How long is the sourdough fermented?": "bakery.html",
    "When did Mount Tereth erupt?": "volcano.md",
    "Which day does the chess club meet?": "chess.txt",
}


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_every_mode_finds_the_right_document(kb, mode):
    for q, fname in QUESTIONS.items():
        hits = rag.search(kb, q, k=3, mode=mode).hits
        assert Path(hits[0].source).name == fname, (mode, q, [h.source for h in hits])


def test_unrelated_question_is_not_found(kb):
    res = rag.search(kb, "What is the exchange rate of the Japanese yen?", k=3)
    assert not res.found and res.best_dense < res.min_score
    ans = rag.ask(kb, "What is the exchange rate of the Japanese yen?", engine=lambda: pytest.fail("no LLM"))
    assert not ans.found and ans.answer == rag.answer.NOT_FOUND and ans.citations == []
    for q in QUESTIONS:
        assert rag.search(kb, q, k=1).found, q


def test_answer_cites_the_right_file_and_span(kb, corpus):
    ans = rag.ask(kb, "Who built the lighthouse at Port Aven?")
    assert ans.found and "Kerlan" in ans.answer
    c = ans.citations[0]
    assert Path(c.source).name == "lighthouse.pdf"
    text = extract_text("lighthouse.pdf", (corpus / "lighthouse.pdf").read_bytes())
    assert text[c.start : c.end] == c.text and "Marie Kerlan" in c.text
    # the retrieval scores behind the citation are its passage's, at its place in the ranking
    passage = ans.passages[c.rank - 1]
    assert passage.chunk_id == c.chunk_id and c.rank >= 1
    assert (c.retrieval_score, c.dense, c.bm25) == (
        round(passage.score, 4), round(passage.dense, 4), round(passage.bm25, 4)
    )
    assert c.dense >= ans.best_dense - rag.answer.MARGIN and c.bm25 > 0


def test_citation_picks_the_sentence_supporting_the_answer(kb):
    res = rag.search(kb, "How long is the sourdough loaf fermented?", k=3)
    cites = rag.answer.cite("It is fermented for thirty hours.", "How long is it fermented?", res.hits)
    assert Path(cites[0].source).name == "bakery.html"
    assert cites[0].text == "Its sourdough loaf is fermented for thirty hours before baking."
    assert cites[0].end - cites[0].start == len(cites[0].text)


def test_eval_reports_hit_at_k_mrr_and_citations(kb, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"question": q, "source": f}) for q, f in QUESTIONS.items()) + "\n")
    m = rag.evaluate(kb, qa)
    assert m["hit@1"] == 1.0 and m["mrr"] == 1.0 and m["questions"] == len(QUESTIONS)
    qa2 = tmp_path / "qa2.jsonl"
    qa2.write_text(json.dumps({"question": "When did Mount Tereth erupt?", "answers": ["1911"]}) + "\n")
    m2 = rag.evaluate(kb, qa2, generate=1)
    assert m2["hit@1"] == 1.0 and m2["citation_source_acc"] == 1.0 and m2["citation_span_acc"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x"}\n')
    with pytest.raises(BadRequest, match="question"):
        rag.evaluate(kb, bad)


def test_squad_slice_hybrid_retrieval(datasets_dir, tmp_path):
    """A slice of SQuAD dev: 2 articles' paragraphs as files (~100), a quarter of their questions."""
    data = json.loads((datasets_dir / "squad-v1.1" / "dev-v1.1.json").read_text())["data"][1:3]
    root = tmp_path / "squad"
    qa = []
    for art in data:
        folder = root / art["title"]
        folder.mkdir(parents=True)
        for i, p in enumerate(art["paragraphs"]):
            (folder / f"p{i:03d}.txt").write_text(p["context"])
            qa += [{"question": q["question"], "source": f"{art['title']}/p{i:03d}.txt"} for q in p["qas"]]
    rag.create_kb("squad-slice")
    rag.add_documents("squad-slice", [root])
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in qa[::4]))
    hybrid = rag.evaluate("squad-slice", path)
    bm25 = rag.evaluate("squad-slice", path, mode="bm25")
    dense = rag.evaluate("squad-slice", path, mode="dense")
    assert hybrid["hit@5"] >= 0.9 and hybrid["mrr"] >= 0.75, hybrid
    assert hybrid["mrr"] >= max(bm25["mrr"], dense["mrr"]) - 0.01, (hybrid, bm25, dense)
