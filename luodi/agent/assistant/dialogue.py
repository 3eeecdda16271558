"""The customer-service assistant (`task: assistant`): a deterministic dialogue manager in Python.

An App YAML declares, under `options` (validated strictly by `AssistantOptions`): intents (an embedded
example set classified with the bundled encoder by nearest centroid, or a trained text-classification app
such as banking77), entities (regex), forms with required slots (asked for, re-asked, corrected), FAQ
answers (a markdown Q/A folder or a luodi.rag knowledge base), order/account look-ups against the demo
database, a confidence threshold with a clarifying question, then a hand-off to a human: a Ticket a human
agent answers; the answer is appended to the customer's thread (role "human_agent").

    a = load_assistant("customer-service")        # a demo app name or an App YAML path
    turn = a.respond("where is my order A1002?")  # Turn(thread_id, reply, intent, confidence, ...)
    a.respond("thanks", thread_id=turn.thread_id)
    answer_ticket(ticket_id, "We refunded you.")  # the customer's next poll sees it
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select

from luodi.agent import memory
from luodi.atomic import atomic_path
from luodi.config import AppConfig, format_validation_error
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.settings import get_settings
from luodi.store import session_scope
from luodi.store.tables import AuditLog, Ticket

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
DEMO_SQL = DEMO_DIR / "orders.sql"
DEMO_APP = DEMO_DIR / "customer-service.yaml"
DEMO_KB = "bank-faq"


# ------------------------------------------------------------------------------------------ config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntentDef(_Strict):
    description: str = ""  # shown in clarifying questions, e.g. "the status of an order"
    examples: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)  # classifier labels meaning this intent (intents.app)
    action: str  # form:<name> | faq | handoff | reply | cancel
    reply: str | None = None  # for action "reply"

    @field_validator("action")
    @classmethod
    def _action(cls, v: str) -> str:
        if v in ("faq", "handoff", "reply", "cancel") or re.fullmatch(r"form:[A-Za-z0-9_-]+", v):
            return v
        raise ValueError("expected one of form:<name>, faq, handoff, reply, cancel")


class IntentsConfig(_Strict):
    app: str | None = None  # a trained text-classification app; None: embedded examples, nearest centroid
    threshold: float = Field(0.5, ge=0, le=1)  # below: ask a clarifying question
    items: dict[str, IntentDef]


class EntityDef(_Strict):
    regex: str
    normalize: Literal["upper", "lower", "none"] = "upper"

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class SlotDef(_Strict):
    entity: str | None = None  # defaults to the slot's name
    ask: str  # the question asking for it
    hint: str = ""  # added when re-asking, e.g. "It looks like A1234."


class FormDef(_Strict):
    slots: dict[str, SlotDef]
    lookup: str  # one SELECT with :slot parameters, run read-only on the database
    reply: str  # formatted with the first row's columns and the slots
    not_found: str = "I could not find anything for {slots}. Could you check and send it again?"


class FaqConfig(_Strict):
    folder: str | None = "demo:faq"  # markdown Q/A files ('## question' + answer); demo:faq is bundled
    kb: str | None = None  # or a luodi.rag knowledge base (answers are its best passage)
    threshold: float = Field(0.55, ge=0, le=1)


class HandoffConfig(_Strict):
    max_clarifications: int = Field(1, ge=0)  # clarifying questions in a row before a human takes over
    max_reasks: int = Field(2, ge=0)  # failed attempts to fill one slot before a human takes over
    message: str = "I am passing you to a human colleague (ticket #{ticket}). They will answer here shortly."


class AbuseConfig(_Strict):
    words: list[str] = Field(default_factory=list)
    reply: str = "Let's keep this respectful, please. I am here to help."
    max_strikes: int = Field(2, ge=1)


class LlmConfig(_Strict):
    enabled: bool = False  # phrase FAQ answers with the chat model (greedy); off: exact FAQ text
    model: str | None = None


def _turn(tid: str, st: dict[str, Any], ents: dict[str, str], reply: str, intent: str, conf: float,
          action: str, **kw: Any) -> Turn:
    """A turn carrying the conversation's current slots, form and the entities found in the message."""
    return Turn(tid, reply, intent, conf, action, slots=dict(st["slots"]), form=st["form"], entities=ents, **kw)


class AssistantOptions(_Strict):
    greeting: str = "Hello! How can I help you today?"
    database: str = "demo"  # demo | path to an SQLite file
    encoder: str = "bundled:minilm-l6"
    intents: IntentsConfig
    entities: dict[str, EntityDef] = Field(default_factory=dict)
    forms: dict[str, FormDef] = Field(default_factory=dict)
    faq: FaqConfig = Field(default_factory=FaqConfig)
    handoff: HandoffConfig = Field(default_factory=HandoffConfig)
    abuse: AbuseConfig = Field(default_factory=AbuseConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    clarify: str = "Sorry, I am not sure I understood. Is it about {options}? You can also rephrase."
    back_to_form: str = "Now, back to your request: {ask}"

    @model_validator(mode="after")
    def _refs(self) -> AssistantOptions:
        for name, it in self.intents.items.items():
            if it.action.startswith("form:") and it.action[5:] not in self.forms:
                raise ValueError(
                    f"intents.items.{name}.action: form '{it.action[5:]}' is not defined under forms"
                )
            if it.action == "reply" and not it.reply:
                raise ValueError(f"intents.items.{name}: action 'reply' needs a 'reply' text")
            if not self.intents.app and not it.examples:
                raise ValueError(
                    f"intents.items.{name}: give 'examples' (or set intents.app to a classifier)"
                )
        for fname, f in self.forms.items():
            for sname, sl in f.slots.items():
                ent = sl.entity or sname
                if ent not in self.entities:
                    raise ValueError(
                        f"forms.{fname}.slots.{sname}: entity '{ent}' is not defined under entities"
                    )
        return self


def parse_options(cfg: AppConfig) -> AssistantOptions:
    if cfg.task != "assistant":
        raise ConfigError(f"app '{cfg.name}' has task '{cfg.task}', not 'assistant'", param="task")
    try:
        return AssistantOptions.model_validate(cfg.options)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"{cfg.name}: options")) from e


# ------------------------------------------------------------------------------------------ demo set-up


def demo_db_path() -> Path:
    return get_settings().home / "demo" / "orders.db"


def build_demo_db(path: str | Path | None = None, force: bool = False) -> Path:
    """Create the demo SQLite database from luodi/demo/orders.sql (atomically: temp file, then rename)."""
    p = Path(path) if path else demo_db_path()
    if p.exists() and not force:
        return p
    with atomic_path(p) as tmp:
        tmp.unlink()  # sqlite3 makes its own file
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(DEMO_SQL.read_text(encoding="utf-8"))
            conn.commit()
        finally:
            conn.close()
    return p


def ensure_demo(kb: bool = True) -> dict[str, Any]:
    """Prepare the customer-service demo: the demo database, and the FAQ knowledge base 'bank-faq'."""
    out: dict[str, Any] = {"db": str(build_demo_db()), "app": str(DEMO_APP)}
    if kb:
        out["kb"] = _ensure_faq_kb()
    return out


def _ensure_faq_kb() -> str | None:
    try:
        from luodi import rag
    except ImportError:
        return None
    if not hasattr(rag, "ensure_kb") or not hasattr(rag, "add_documents"):
        return None  # the agent's kb_search falls back to the bundled FAQ index
    rag.ensure_kb(DEMO_KB)
    rag.add_documents(DEMO_KB, sorted(str(p) for p in (DEMO_DIR / "faq").glob("*.md")))
    return DEMO_KB


# ------------------------------------------------------------------------------------------ the assistant


@dataclass
class Turn:
    thread_id: str
    reply: str
    intent: str  # the intent the manager acted on: an intent name, inform, faq, unknown, abuse
    confidence: float
    action: str  # reply | ask | lookup | faq | clarify | handoff | cancel | abuse
    slots: dict[str, str] = field(default_factory=dict)
    form: str | None = None
    ticket_id: int | None = None
    entities: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Assistant:
    """One assistant app: classify, extract, manage forms, answer, clarify, hand off (see module doc)."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.name = config.name
        self.opts = parse_options(config)
        self._lock = threading.Lock()
        self._entity_re = {k: re.compile(v.regex, re.I) for k, v in self.opts.entities.items()}
        self._abuse = (
            re.compile(r"\b(" + "|".join(re.escape(w) for w in self.opts.abuse.words) + r")\b", re.I)
            if self.opts.abuse.words
            else None
        )
        self._centroids: np.ndarray | None = None
        self._faq = None

    # ----------------------------------------------------------------------------- perception
    def _encoder(self):
        from luodi.embeddings import get_encoder

        return get_encoder(self.opts.encoder)

    def _intent_vectors(self) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
        with self._lock:
            if self._centroids is None:
                names = list(self.opts.intents.items)
                enc = self._encoder()
                ex = [enc.encode(self.opts.intents.items[n].examples) for n in names]
                cent = np.stack([e.mean(0) / (np.linalg.norm(e.mean(0)) + 1e-9) for e in ex])
                self._names, self._centroids, self._examples = names, cent, ex
        return self._names, self._centroids, self._examples

    def classify(self, text: str) -> list[tuple[str, float]]:
        """Intents ranked by confidence in [0, 1]."""
        if self.opts.intents.app:
            return self._classify_app(text)
        names, cent, examples = self._intent_vectors()
        v = self._encoder().encode([text])[0]
        # nearest centroid, sharpened by the closest example (short, varied example sets)
        scores = [0.5 * float(cent[i] @ v) + 0.5 * float((examples[i] @ v).max()) for i in range(len(names))]
        return sorted(zip(names, scores, strict=True), key=lambda x: -x[1])

    def _classify_app(self, text: str) -> list[tuple[str, float]]:
        from luodi import api

        out = api.predict(self.opts.intents.app, [{"text": text}])[0]
        label = str(out.get("label", out.get("prediction", "")))
        score = float(out.get("score", out.get("confidence", out.get("probability", 1.0))) or 0.0)
        for name, it in self.opts.intents.items.items():
            if label in it.labels or label == name:
                return [(name, score)]
        faq = [n for n, it in self.opts.intents.items.items() if it.action == "faq"]
        return [(faq[0], score)] if faq else [("unknown", 0.0)]

    def entities(self, text: str) -> dict[str, str]:
        out = {}
        for name, rx in self._entity_re.items():
            m = rx.search(text)
            if m:
                val = m.group(1) if m.groups() else m.group(0)
                norm = self.opts.entities[name].normalize
                out[name] = val.upper() if norm == "upper" else val.lower() if norm == "lower" else val
        return out

    def faq_answer(self, text: str) -> tuple[str, str, float] | None:
        """(answer, question/source, score) of the best FAQ entry, or None."""
        f = self.opts.faq
        if f.kb:
            from luodi import rag

            hits = list(rag.search(f.kb, text, k=1))
            if not hits:
                return None
            h = hits[0]
            return (
                getattr(h, "text", str(h)),
                str(getattr(h, "source", f.kb)),
                float(getattr(h, "score", 0.0)),
            )
        if not f.folder:
            return None
        if self._faq is None:
            from luodi.agent.faq import DEMO_FAQ, FaqIndex, read_faq

            folder = DEMO_FAQ if f.folder == "demo:faq" else Path(f.folder).expanduser()
            if not Path(folder).is_dir():
                raise ConfigError(
                    f"{self.name}: options.faq.folder '{folder}' is not a folder", param="faq.folder"
                )
            self._faq = FaqIndex(read_faq(folder), self.opts.encoder)
        hits = self._faq.search(text, 1)
        if not hits:
            return None
        e, s = hits[0]
        return e.answer, e.question, s

    # ----------------------------------------------------------------------------- turns
    def start(self, thread_id: str | None = None) -> str:
        """A new conversation with the greeting as its first message."""
        tid = memory.create_thread("assistant", app=self.name, state=_fresh_state(), thread_id=thread_id)
        memory.add_message(tid, "assistant", self.opts.greeting, {"action": "greet"})
        return tid

    def respond(self, text: str, thread_id: str | None = None) -> Turn:
        """Handle one customer message (a new conversation when thread_id is None)."""
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("'message' must be a non-empty string", param="message")
        if len(text) > 2000:
            raise BadRequest("'message' is too long (max 2000 characters)", param="message")
        if thread_id is None:
            thread_id = self.start()
        th = memory.get_thread(thread_id, kind="assistant")
        if th["app"] != self.name:
            raise BadRequest(
                f"thread '{thread_id}' belongs to assistant '{th['app']}', not '{self.name}'",
                param="thread_id",
            )
        st = {**_fresh_state(), **th["state"]}
        memory.add_message(thread_id, "user", text)
        turn = self._decide(text.strip(), st, thread_id)
        st["turns"] += 1
        st["last_intent"] = turn.intent
        memory.save_state(thread_id, st)
        memory.add_message(
            thread_id,
            "assistant",
            turn.reply,
            {
                "intent": turn.intent,
                "confidence": round(turn.confidence, 4),
                "action": turn.action,
                "slots": turn.slots,
                "form": turn.form,
                "ticket_id": turn.ticket_id,
            },
        )
        return turn

    def _decide(self, text: str, st: dict[str, Any], tid: str) -> Turn:
        o = self.opts
        ents = self.entities(text)

        turn = functools.partial(_turn, tid, st, ents)

        if self._abuse and self._abuse.search(text):
            st["strikes"] += 1
            if st["strikes"] >= o.abuse.max_strikes:
                return self._handoff(st, tid, text, "abuse", 1.0, ents, reason="abusive customer")
            return turn(self._with_reask(o.abuse.reply, st), "abuse", 1.0, "abuse")

        ranking = self.classify(text)
        intent, conf = ranking[0] if ranking else ("unknown", 0.0)
        strong = conf >= o.intents.threshold
        faq = self.faq_answer(text) if o.faq.folder or o.faq.kb else None
        faq_strong = faq is not None and faq[2] >= o.faq.threshold and (not strong or faq[2] > conf)
        action = o.intents.items[intent].action if intent in o.intents.items else "unknown"

        # 1. a form is open: slot values (and corrections) first, then cancel / interruptions
        if st["form"]:
            form = o.forms[st["form"]]
            filled = {s: ents[sl.entity or s] for s, sl in form.slots.items() if (sl.entity or s) in ents}
            if strong and action == "cancel":
                st.update(form=None, slots={}, asked=None, reasks=0)
                return turn(o.intents.items[intent].reply or "OK, I cancelled that.", intent, conf, "cancel")
            switch = strong and action.startswith("form:") and action[5:] != st["form"]
            if not filled and not switch:  # a value that only another form takes: the customer switched
                other = self._form_for_entities(ents, exclude=st["form"])
                if other is not None:
                    intent, conf, action, switch = (
                        other,
                        max(conf, o.intents.threshold),
                        o.intents.items[other].action,
                        True,
                    )
            if filled and not switch:
                st["slots"].update(filled)
                st["reasks"] = 0
                return self._advance(st, tid, "inform", max(conf, 1.0 if filled else conf), ents)
            if not switch and (faq_strong or (strong and action in ("reply", "handoff", "faq"))):
                # an interruption: answer it, then come back to the open question
                inner = self._act(intent, conf, action, faq, faq_strong, st, tid, text, ents)
                if inner.action == "handoff":
                    return inner
                inner.reply = self._with_reask(inner.reply, st)
                return inner
            if not switch:
                st["reasks"] += 1
                if st["reasks"] > o.handoff.max_reasks:
                    return self._handoff(st, tid, text, "unknown", conf, ents, reason="could not fill a slot")
                sl = form.slots[st["asked"]]
                return turn(
                    f"Sorry, I did not catch that. {sl.ask} {sl.hint}".strip(), "unknown", conf, "ask"
                )
        # 2. a correction of the last look-up ("sorry, I meant A1003")
        last = st.get("last_form")
        if last and last in o.forms and not (strong and action != "cancel") and not faq_strong:
            form = o.forms[last]
            fix = {s: ents[sl.entity or s] for s, sl in form.slots.items() if (sl.entity or s) in ents}
            if fix:
                st.update(form=last, slots={**st.get("last_slots", {}), **fix}, asked=None, reasks=0)
                return self._advance(st, tid, "inform", 1.0, ents)
        return self._act(intent, conf, action, faq, faq_strong, st, tid, text, ents, ranking=ranking)

    def _form_for_entities(self, ents: dict[str, str], exclude: str | None) -> str | None:
        """The intent whose form takes one of these entities (None when none or several)."""
        hits = []
        for name, it in self.opts.intents.items.items():
            if it.action.startswith("form:") and it.action[5:] != exclude:
                slots = self.opts.forms[it.action[5:]].slots
                if any((sl.entity or s) in ents for s, sl in slots.items()):
                    hits.append(name)
        return hits[0] if len(hits) == 1 else None

    def _act(
        self,
        intent: str,
        conf: float,
        action: str,
        faq: tuple | None,
        faq_strong: bool,
        st: dict[str, Any],
        tid: str,
        text: str,
        ents: dict[str, str],
        ranking: list[tuple[str, float]] | None = None,
    ) -> Turn:
        o = self.opts

        turn = functools.partial(_turn, tid, st, ents)

        if faq_strong and faq is not None:
            st["clarifications"] = 0
            return turn(self._phrase_faq(text, faq[0]), "faq", faq[2], "faq")
        if conf >= o.intents.threshold and action != "unknown":
            st["clarifications"] = 0
            it = o.intents.items[intent]
            if action == "reply":
                return turn(it.reply or "", intent, conf, "reply")
            if action == "cancel":
                return turn(it.reply or "There is nothing to cancel.", intent, conf, "cancel")
            if action == "handoff":
                return self._handoff(st, tid, text, intent, conf, ents, reason="customer asked for a human")
            if action == "faq":
                if faq is not None and faq[2] >= o.faq.threshold * 0.8:
                    return turn(self._phrase_faq(text, faq[0]), intent, conf, "faq")
                return self._clarify(st, tid, text, intent, conf, ents, ranking)
            fname = action[5:]
            st.update(form=fname, slots={}, asked=None, reasks=0)
            form = o.forms[fname]
            st["slots"].update(
                {s: ents[sl.entity or s] for s, sl in form.slots.items() if (sl.entity or s) in ents}
            )
            return self._advance(st, tid, intent, conf, ents)
        return self._clarify(st, tid, text, intent, conf, ents, ranking)

    def _clarify(
        self,
        st: dict[str, Any],
        tid: str,
        text: str,
        intent: str,
        conf: float,
        ents: dict[str, str],
        ranking: list[tuple[str, float]] | None,
    ) -> Turn:
        o = self.opts
        st["clarifications"] += 1
        if st["clarifications"] > o.handoff.max_clarifications:
            return self._handoff(st, tid, text, "unknown", conf, ents, reason="intent not understood")
        opts = [
            o.intents.items[n].description
            for n, _ in (ranking or [])
            if n in o.intents.items and o.intents.items[n].description
        ][:2]
        options = " or ".join(opts) if opts else "your order, your account or a general question"
        reply = o.clarify.format(options=options)
        return Turn(
            tid, reply, "unknown", conf, "clarify", slots=dict(st["slots"]), form=st["form"], entities=ents
        )

    def _advance(self, st: dict[str, Any], tid: str, intent: str, conf: float, ents: dict[str, str]) -> Turn:
        """Ask the next missing slot, or run the form's look-up and answer."""
        form = self.opts.forms[st["form"]]
        for sname, sl in form.slots.items():
            if sname not in st["slots"]:
                st["asked"] = sname
                return Turn(
                    tid, sl.ask, intent, conf, "ask", slots=dict(st["slots"]), form=st["form"], entities=ents
                )
        slots = dict(st["slots"])
        row = self._lookup(form.lookup, slots)
        fname = st["form"]
        st.update(form=None, slots={}, asked=None, reasks=0, last_form=fname, last_slots=slots)
        if row is None:
            reply = form.not_found.format(slots=", ".join(slots.values()), **slots)
            # keep the form open so the customer can correct the value
            st.update(form=fname, slots={}, asked=next(iter(form.slots)))
        else:
            reply = form.reply.format(**{k: ("-" if v is None else v) for k, v in {**slots, **row}.items()})
        return Turn(tid, reply, intent, conf, "lookup", slots=slots, form=fname, entities=ents)

    def _lookup(self, sql: str, slots: dict[str, str]) -> dict[str, Any] | None:
        db = demo_db_path() if self.opts.database == "demo" else Path(self.opts.database).expanduser()
        if self.opts.database == "demo" and not db.exists():
            build_demo_db()
        if not db.exists():
            raise ConfigError(f"{self.name}: options.database '{db}' not found", param="database")
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.row_factory = sqlite3.Row
            r = conn.execute(sql, slots).fetchone()
        finally:
            conn.close()
        return dict(r) if r is not None else None

    def _with_reask(self, reply: str, st: dict[str, Any]) -> str:
        if st.get("form") and st.get("asked"):
            ask = self.opts.forms[st["form"]].slots[st["asked"]].ask
            return f"{reply} {self.opts.back_to_form.format(ask=ask)}"
        return reply

    def _handoff(
        self,
        st: dict[str, Any],
        tid: str,
        text: str,
        intent: str,
        conf: float,
        ents: dict[str, str],
        reason: str,
    ) -> Turn:
        if st.get("ticket") and _ticket_open(st["ticket"]):
            ticket = st["ticket"]
        else:
            transcript = "\n".join(f"{m['role']}: {m['content']}" for m in memory.get_thread(tid)["messages"])
            ticket = create_ticket(tid, f"[{self.name}] {text[:120]}", f"Reason: {reason}\n\n{transcript}")
        st.update(ticket=ticket, clarifications=0, reasks=0, form=None, slots={}, asked=None)
        return Turn(
            tid,
            self.opts.handoff.message.format(ticket=ticket),
            intent,
            conf,
            "handoff",
            slots={},
            form=None,
            ticket_id=ticket,
            entities=ents,
        )

    def _phrase_faq(self, question: str, answer: str) -> str:
        if not self.opts.llm.enabled:
            return answer
        from luodi.engines import SamplingParams, complete, get_engine
        from luodi.llm import run_sync

        eng = get_engine(self.opts.llm.model)
        prompt = eng.chat_prompt(
            [
                {
                    "role": "system",
                    "content": "You are a bank's support assistant. Answer the customer's question in "
                    "one or two sentences using only this FAQ answer:\n" + answer,
                },
                {"role": "user", "content": question},
            ]
        )
        text = run_sync(complete(eng, prompt, SamplingParams(max_tokens=80, temperature=0.0))).text
        return text.strip() or answer


def _fresh_state() -> dict[str, Any]:
    return {
        "form": None,
        "slots": {},
        "asked": None,
        "reasks": 0,
        "clarifications": 0,
        "strikes": 0,
        "ticket": None,
        "turns": 0,
        "last_intent": None,
        "last_form": None,
        "last_slots": {},
    }


_assistants: dict[str, Assistant] = {}
_assistants_lock = threading.Lock()


def load_assistant(app: str | Path | AppConfig | dict) -> Assistant:
    """An Assistant from an App YAML path, a config, or an app name (demo apps included); cached by name."""
    if isinstance(app, AppConfig | dict):
        from luodi.api import load_app

        cfg = load_app(app)
        return Assistant(cfg)
    key = str(app)
    with _assistants_lock:
        if key not in _assistants:
            from luodi.api import load_app

            if key == "customer-service" or key == str(DEMO_APP):
                from luodi.config import load_app_config

                cfg = load_app_config(DEMO_APP)
            else:
                cfg = load_app(app)
            _assistants[key] = Assistant(cfg)
        return _assistants[key]


# ------------------------------------------------------------------------------------------ tickets


def _ticket_dict(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "thread_id": t.thread_id,
        "subject": t.subject,
        "body": t.body,
        "status": t.status,
        "answer": t.answer,
        "created_at": t.created_at.isoformat() if t.created_at else None,
        "answered_at": t.answered_at.isoformat() if t.answered_at else None,
    }


def _ticket_open(ticket_id: int) -> bool:
    with session_scope() as s:
        t = s.get(Ticket, ticket_id)
        return t is not None and t.status == "open"


def create_ticket(thread_id: str | None, subject: str, body: str) -> int:
    with session_scope() as s:
        t = Ticket(thread_id=thread_id, subject=subject[:500], body=body)
        s.add(t)
        s.flush()
        s.add(
            AuditLog(
                actor="assistant", action="ticket.created", detail={"ticket_id": t.id, "thread_id": thread_id}
            )
        )
        return t.id


def list_tickets(status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
    if status not in (None, "open", "answered", "closed"):
        raise BadRequest(f"'status' must be open, answered or closed, got {status!r}", param="status")
    with session_scope() as s:
        q = select(Ticket).order_by(Ticket.id.desc()).limit(max(1, min(limit, 1000)))
        if status:
            q = q.where(Ticket.status == status)
        return [_ticket_dict(t) for t in s.scalars(q).all()]


def get_ticket(ticket_id: int) -> dict[str, Any]:
    with session_scope() as s:
        t = s.get(Ticket, ticket_id)
        if t is None:
            raise NotFound(f"ticket {ticket_id} not found", param="ticket_id")
        return _ticket_dict(t)


def answer_ticket(
    ticket_id: int, answer: str, actor: str = "human_agent", close: bool = False
) -> dict[str, Any]:
    """A human agent's answer: stored on the ticket and appended to the customer's conversation."""
    if not isinstance(answer, str) or not answer.strip():
        raise BadRequest("'answer' must be a non-empty string", param="answer")
    with session_scope() as s:
        t = s.get(Ticket, ticket_id)
        if t is None:
            raise NotFound(f"ticket {ticket_id} not found", param="ticket_id")
        if t.status == "closed":
            raise BadRequest(f"ticket {ticket_id} is closed; open a new one", param="ticket_id", status=409)
        t.answer = answer.strip()
        t.status = "closed" if close else "answered"
        t.answered_at = datetime.now(UTC)
        s.add(
            AuditLog(
                actor=actor, action="ticket.answered", detail={"ticket_id": t.id, "thread_id": t.thread_id}
            )
        )
        out = _ticket_dict(t)
    if out["thread_id"] and memory.thread_exists(out["thread_id"]):
        memory.add_message(
            out["thread_id"], "human_agent", out["answer"], {"ticket_id": ticket_id, "by": actor}
        )
    return out


# ---------------------------------------------------------------------------- conversation tests


class ConvTurn(_Strict):
    user: str
    intent: str | None = None  # expected intent (for per-turn intent accuracy)
    expect: list[str] = Field(default_factory=list)  # substrings the reply must contain (case-insensitive)
    expect_any: list[str] = Field(default_factory=list)  # at least one of these
    action: str | None = None  # expected action (ask, lookup, faq, clarify, handoff, ...)
    human_reply: str | None = None  # after this turn, a human agent answers the open ticket


class ConvCase(_Strict):
    name: str
    turns: list[ConvTurn]
    expect_ticket: bool | None = None  # the conversation must (not) end with a ticket


class ConvSuite(_Strict):
    app: str = "customer-service"
    conversations: list[ConvCase]


def load_tests(path: str | Path) -> ConvSuite:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"test file '{p}' not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        return ConvSuite.model_validate(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(p))) from e


def run_tests(path: str | Path, app: str | None = None, progress: Any = None) -> dict[str, Any]:
    """Play every conversation; report per-turn intent accuracy, turn pass rate and task success rate."""
    suite = load_tests(path)
    ref = app or suite.app
    if ref != "customer-service" and not Path(ref).is_absolute() and (Path(path).parent / ref).exists():
        ref = str(Path(path).parent / ref)
    a = load_assistant(ref)
    convs, n_int, ok_int, n_turns, ok_turns = [], 0, 0, 0, 0
    for conv in suite.conversations:
        tid = a.start()
        turns, ok_conv = [], True
        for t in conv.turns:
            r = a.respond(t.user, tid)
            low = r.reply.lower()
            problems = [f"reply lacks {e!r}" for e in t.expect if e.lower() not in low]
            if t.expect_any and not any(e.lower() in low for e in t.expect_any):
                problems.append(f"reply has none of {t.expect_any}")
            if t.action and r.action != t.action:
                problems.append(f"action {r.action!r} != {t.action!r}")
            if t.intent is not None:
                n_int += 1
                if r.intent == t.intent:
                    ok_int += 1
                else:
                    problems.append(f"intent {r.intent!r} != {t.intent!r}")
            if t.human_reply:
                tickets = [x for x in list_tickets("open") if x["thread_id"] == tid]
                if not tickets:
                    problems.append("no open ticket for the human to answer")
                else:
                    answer_ticket(tickets[0]["id"], t.human_reply)
                    msgs = memory.get_thread(tid)["messages"]
                    if not any(m["role"] == "human_agent" and m["content"] == t.human_reply for m in msgs):
                        problems.append("the human's answer did not reach the conversation")
            n_turns += 1
            ok_turns += not problems
            ok_conv &= not problems
            turns.append(
                {
                    "user": t.user,
                    "reply": r.reply,
                    "intent": r.intent,
                    "confidence": round(r.confidence, 3),
                    "action": r.action,
                    "problems": problems,
                }
            )
        if conv.expect_ticket is not None:
            has = bool(memory.get_thread(tid)["state"].get("ticket"))
            if has != conv.expect_ticket:
                ok_conv = False
                turns[-1]["problems"].append(f"ticket expected={conv.expect_ticket}, got {has}")
        convs.append({"name": conv.name, "passed": ok_conv, "thread_id": tid, "turns": turns})
        if progress:
            progress(convs[-1])
    return {
        "app": a.name,
        "conversations": convs,
        "task_success_rate": sum(c["passed"] for c in convs) / max(1, len(convs)),
        "intent_accuracy": ok_int / max(1, n_int),
        "intent_turns": n_int,
        "turn_pass_rate": ok_turns / max(1, n_turns),
        "turns": n_turns,
    }
