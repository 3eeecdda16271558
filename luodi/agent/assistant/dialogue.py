"""The assistant's dialogue manager: deterministic Python deciding each turn from what the message says
(luodi.agent.assistant.perception) and the conversation's state (stored with the thread, so any process
can continue it): fill a form's slots and run its look-up, answer from the FAQ, ask a clarifying
question, or hand off to a human (a ticket).

    a = load_assistant("customer-service")        # a demo app name or an App YAML path
    turn = a.respond("where is my order A1002?")  # Turn(thread_id, reply, intent, confidence, ...)
    a.respond("thanks", thread_id=turn.thread_id)
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from luodi import api
from luodi.agent import memory
from luodi.agent.assistant.demo import DEMO_APP, build_demo_db, demo_db_path
from luodi.agent.assistant.options import parse_options
from luodi.agent.assistant.perception import Perception
from luodi.agent.assistant.tickets import create_ticket, ticket_open
from luodi.config import AppConfig, load_app_config
from luodi.engines import SamplingParams, complete, get_engine
from luodi.errors import BadRequest, ConfigError
from luodi.llm import run_sync

MAX_MESSAGE = 2000  # characters of one customer message


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


def _turn(
    tid: str, st: dict[str, Any], ents: dict[str, str], reply: str, intent: str, conf: float, action: str, **kw: Any
) -> Turn:
    """A turn carrying the conversation's current slots, form and the entities found in the message."""
    return Turn(tid, reply, intent, conf, action, slots=dict(st["slots"]), form=st["form"], entities=ents, **kw)


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


class Assistant:
    """One assistant app: perceive, manage forms, answer, clarify, hand off (see the module docstring)."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.name = config.name
        self.opts = parse_options(config)
        self.perception = Perception(config.name, self.opts)

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
        if len(text) > MAX_MESSAGE:
            raise BadRequest(f"'message' is too long (max {MAX_MESSAGE} characters)", param="message")
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
        seen = self.perception
        ents = seen.entities(text)
        turn = functools.partial(_turn, tid, st, ents)

        if seen.is_abusive(text):
            st["strikes"] += 1
            if st["strikes"] >= o.abuse.max_strikes:
                return self._handoff(st, tid, text, "abuse", 1.0, ents, reason="abusive customer")
            return turn(self._with_reask(o.abuse.reply, st), "abuse", 1.0, "abuse")

        ranking = seen.classify(text)
        intent, conf = ranking[0] if ranking else ("unknown", 0.0)
        strong = conf >= o.intents.threshold
        faq = seen.faq_answer(text) if o.faq.folder or o.faq.kb else None
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
                return turn(f"Sorry, I did not catch that. {sl.ask} {sl.hint}".strip(), "unknown", conf, "ask")
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
            st["slots"].update({s: ents[sl.entity or s] for s, sl in form.slots.items() if (sl.entity or s) in ents})
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
        return Turn(tid, reply, "unknown", conf, "clarify", slots=dict(st["slots"]), form=st["form"], entities=ents)

    def _advance(self, st: dict[str, Any], tid: str, intent: str, conf: float, ents: dict[str, str]) -> Turn:
        """Ask the next missing slot, or run the form's look-up and answer."""
        form = self.opts.forms[st["form"]]
        for sname, sl in form.slots.items():
            if sname not in st["slots"]:
                st["asked"] = sname
                return Turn(tid, sl.ask, intent, conf, "ask", slots=dict(st["slots"]), form=st["form"], entities=ents)
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
        if st.get("ticket") and ticket_open(st["ticket"]):
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


_assistants: dict[str, Assistant] = {}
_assistants_lock = threading.Lock()


def load_assistant(app: str | Path | AppConfig | dict) -> Assistant:
    """An Assistant from an App YAML path, a config, or an app name (demo apps included); cached by name."""
    if isinstance(app, AppConfig | dict):
        return Assistant(api.load_app(app))
    key = str(app)
    with _assistants_lock:
        if key not in _assistants:
            demo = key in ("customer-service", str(DEMO_APP))
            _assistants[key] = Assistant(load_app_config(DEMO_APP) if demo else api.load_app(app))
        return _assistants[key]
