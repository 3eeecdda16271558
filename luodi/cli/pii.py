"""CLI verbs for PII: luodi pii scan|redact|decrypt FILE|- (one text per line; all via luodi.privacy)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from luodi.cli.common import fail
from luodi.errors import BadRequest, LuodiError

console = Console(stderr=True)

Source = Annotated[str, typer.Argument(help="UTF-8 text file, one text per line; '-' reads standard input")]
Entities = Annotated[
    str | None, typer.Option("--entities", help="comma-separated entity types (default: all; see docs/privacy.md)")
]
NoNames = Annotated[
    bool, typer.Option("--no-names", help="patterns only: no PERSON / ORGANIZATION / LOCATION (no NER app needed)")
]
NerApp = Annotated[str, typer.Option("--ner-app", help="trained token-classification app that finds the names")]
Threshold = Annotated[float, typer.Option("--threshold", help="lowest detection score kept")]


def read_lines(source: str) -> list[str]:
    """The lines of a UTF-8 file or of standard input ('-'); errors name the argument."""
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise BadRequest(
                f"FILE: '{source}' is not a file (give a text file or '-' for standard input)", param="FILE"
            )
        data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"FILE: '{source}' is not UTF-8 text (byte {e.start})", param="FILE") from None
    return text.splitlines()


def settings(entities: str | None, no_names: bool, ner_app: str, threshold: float, **more: Any) -> Any:
    try:
        from luodi.privacy import pii_config
    except ImportError as e:
        raise LuodiError(f"PII detection needs the privacy extra: pip install 'luodi[privacy]' ({e})") from None
    data: dict[str, Any] = {"ner_app": None if no_names else ner_app, "score_threshold": threshold, **more}
    if entities:
        data["entities"] = [e.strip() for e in entities.split(",") if e.strip()]
    return pii_config(data, where="pii")


def summary(counts: Counter, what: str) -> None:
    found = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    console.print(f"{what}: {found}", highlight=False)


def register(app: typer.Typer) -> None:
    pii = typer.Typer(no_args_is_help=True, help="PII: find and redact personal data in text (Presidio, offline).")
    app.add_typer(pii, name="pii")

    @pii.command("scan")
    def scan_cmd(
        source: Source,
        entities: Entities = None,
        no_names: NoNames = False,
        ner_app: NerApp = "entity-extraction",
        threshold: Threshold = 0.4,
    ):
        """Find PII: one JSON line per input line that holds any ({line, entities: [{entity_type, start, end,
        score, text}]}); counts per type on stderr."""
        try:
            cfg = settings(entities, no_names, ner_app, threshold)
            lines = read_lines(source)
            from luodi.privacy import scan

            found = scan(lines, cfg)
        except LuodiError as e:
            fail(e)
        counts: Counter = Counter()
        for n, ents in enumerate(found, 1):
            if ents:
                counts.update(e["entity_type"] for e in ents)
                print(json.dumps({"line": n, "entities": ents}, ensure_ascii=False))
        summary(counts, "found")

    @pii.command("redact")
    def redact_cmd(
        source: Source,
        operator: Annotated[
            str, typer.Option("--operator", help="replace (<TYPE>), redact (remove), mask, hash or encrypt")
        ] = "replace",
        as_json: Annotated[
            bool, typer.Option("--json", help="one JSON line per input line: {text, items, removed} (decrypt reads it)")
        ] = False,
        entities: Entities = None,
        no_names: NoNames = False,
        ner_app: NerApp = "entity-extraction",
        threshold: Threshold = 0.4,
        mask_char: Annotated[str, typer.Option("--mask-char", help="mask: the masking character")] = "*",
        salt_env: Annotated[
            str | None, typer.Option("--salt-env", help="hash: environment variable holding a fixed salt (>= 16 bytes)")
        ] = None,
    ):
        """Print the text with its PII replaced (encrypt: key from LUODI_PII_KEY; use --json to decrypt later);
        the entity types removed on stderr."""
        import os

        try:
            more: dict[str, Any] = {"operator": operator, "mask_char": mask_char}
            if salt_env:
                if not os.environ.get(salt_env):
                    raise BadRequest(f"--salt-env: environment variable {salt_env} is not set", param="salt_env")
                more["salt"] = os.environ[salt_env]
            cfg = settings(entities, no_names, ner_app, threshold, **more)
            lines = read_lines(source)
            from luodi.privacy import redact

            done = redact(lines, cfg)
        except LuodiError as e:
            fail(e)
        counts: Counter = Counter()
        for r in done:
            counts.update(i["entity_type"] for i in r["items"])
            print(json.dumps(r, ensure_ascii=False) if as_json else r["text"])
        summary(counts, "removed")

    @pii.command("decrypt")
    def decrypt_cmd(source: Annotated[str, typer.Argument(help="`luodi pii redact --operator encrypt --json` output")]):
        """Reverse encrypt with the key in LUODI_PII_KEY: prints the original lines."""
        try:
            lines = read_lines(source)
            from luodi.privacy import decrypt

            for n, line in enumerate(lines, 1):
                try:
                    row = json.loads(line)
                    text, items = row["text"], row["items"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise BadRequest(
                        f"line {n}: expected a JSON line with text and items (redact --json output)", param="FILE"
                    ) from None
                print(decrypt(text, items))
        except LuodiError as e:
            fail(e)
