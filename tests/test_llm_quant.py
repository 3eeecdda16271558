"""Re-quantizing the bundled chat GGUF: perplexity and speed per weight format, and `luodi quantize-llm`."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from luodi.cli import quantize as quantize_cli

MODEL = "bundled:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def source() -> str:
    from luodi.errors import BadRequest
    from luodi.models import resolve

    try:
        path = resolve(MODEL).path
    except BadRequest as e:
        pytest.skip(str(e))
    return path


@pytest.fixture(scope="module")
def held_out(datasets_dir: Path) -> list[str]:
    """DailyDialog test dialogues as plain text (research / non-commercial: tests and bench only)."""
    f = datasets_dir / "dailydialog" / "test" / "dialogues_test.txt"
    if not f.is_file():
        pytest.skip(f"{f} not found")
    return [line.replace(" __eou__", "\n").strip() for line in f.read_text(encoding="utf-8").splitlines()[:60]]


def said(r) -> str:
    """A command's output with rich's line wrapping undone."""
    return " ".join(r.output.split())


def cli() -> typer.Typer:
    app = typer.Typer()
    quantize_cli.register(app)

    @app.command("noop")  # a second command keeps `quantize-llm` a named subcommand, as in luodi's CLI
    def noop() -> None:
        pass

    return app


def test_quantize_report_perplexity_and_speed(source, held_out):
    from luodi.engines.perplexity import quantize_report

    rows = quantize_report(source, ["q8_0", "q4_0"], held_out, max_tokens=400, n_ctx=256, n_prompt=64, n_gen=16,
                           repeats=1, threads=1)
    by = {r["type"]: r for r in rows}
    assert [r["type"] for r in rows] == ["q4_1", "q8_0", "q4_0"] and rows[0]["source"]
    assert all(r["tokens"] == 400 for r in rows)  # the same tokens scored for every format
    base, q8, q4 = by["q4_1"]["perplexity"], by["q8_0"]["perplexity"], by["q4_0"]["perplexity"]
    assert 1 < base < 200
    assert abs(q8 / base - 1) < 0.03, (base, q8)
    assert q4 > q8 * 1.05, (q8, q4)
    assert by["q8_0"]["ppl_delta_pct"] == pytest.approx(100 * (q8 / base - 1), abs=0.01)
    for r in rows:
        assert r["prompt_tok_s"] > 0 and r["gen_tok_s"] > 0 and r["file_mb"] > 10
    assert rows[0]["prompt_ratio"] == 1.0 and by["q4_0"]["file_mb"] < by["q8_0"]["file_mb"]


def test_perplexity_rejects_empty_text(source):
    from luodi.engines.perplexity import perplexity
    from luodi.errors import BadRequest

    with pytest.raises(BadRequest, match="no text"):
        perplexity(source, ["", ""], max_tokens=10)


def test_cli_rejects_unknown_type():
    r = CliRunner().invoke(cli(), ["quantize-llm", "--type", "q9_9"])
    assert r.exit_code == 2
    assert "unknown weight format 'q9_9'; choose from: q8_0, q4_k_m, q4_0" in said(r)


def test_cli_rejects_missing_eval_file_and_out_with_two_types(tmp_path):
    r = CliRunner().invoke(cli(), ["quantize-llm", "--type", "q8_0", "--eval-file", str(tmp_path / "none.txt")])
    assert r.exit_code == 2 and "is not a file" in said(r)
    r = CliRunner().invoke(cli(), ["quantize-llm", "-t", "q8_0,q4_0", "--out", str(tmp_path / "m.gguf")])
    assert r.exit_code == 2 and "exactly one --type" in said(r)
    r = CliRunner().invoke(cli(), ["quantize-llm", str(tmp_path / "missing.gguf"), "-t", "q8_0"])
    assert r.exit_code == 2 and "not found" in said(r)


def test_cli_prints_the_table_and_copies_the_model(tmp_path, monkeypatch):
    import luodi.engines.perplexity as perplexity

    made = tmp_path / "cache.q8_0.gguf"
    made.write_bytes(b"GGUF-fake")
    seen = {}

    def fake_report(path, types, texts, **kw):
        seen.update(path=path, types=types, texts=texts, **kw)
        row = {"perplexity": 20.0, "ppl_delta_pct": 0.0, "prompt_tok_s": 100.0, "gen_tok_s": 50.0,
               "prompt_ratio": 1.0, "gen_ratio": 1.0, "tokens": 5}
        return [{**row, "type": "q4_1", "source": True, "path": path, "file_mb": 93.8},
                {**row, "type": "q8_0", "source": False, "path": str(made), "file_mb": 138.1, "perplexity": 20.1,
                 "ppl_delta_pct": 0.5, "prompt_ratio": 2.0}]

    monkeypatch.setattr(perplexity, "quantize_report", fake_report)
    text = tmp_path / "held-out.txt"
    text.write_text("Hello there.\nHow are you?\n", encoding="utf-8")
    out = tmp_path / "exported.gguf"
    r = CliRunner().invoke(cli(), ["quantize-llm", "--type", "Q8_0", "--eval-file", str(text), "--tokens", "50",
                                   "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert seen["types"] == ["q8_0"] and seen["max_tokens"] == 50 and seen["texts"] == [text.read_text()]
    assert "q4_1 (source)" in r.output and "+0.50%" in r.output and "2.00" in r.output
    assert out.read_bytes() == b"GGUF-fake"
