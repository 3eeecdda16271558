"""What an assistant App YAML may say under `options`, validated strictly (unknown keys are errors).

Cross-references are checked too: an intent's `form:<name>` must be defined under `forms`, and a slot's
entity under `entities`, so a typo fails when the app loads, not in the middle of a conversation.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from luodi.config import AppConfig, Strict, format_validation_error
from luodi.errors import ConfigError

ACTIONS = ("faq", "handoff", "reply", "cancel")


class IntentDef(Strict):
    description: str = Field("", description="shown in clarifying questions, e.g. 'the status of an order'")
    examples: list[str] = Field(default_factory=list, description="example phrasings (embedded classifier)")
    labels: list[str] = Field(
        default_factory=list, description="labels of the intents.app classifier that mean this intent"
    )
    action: str = Field(description="form:<name> | faq | handoff | reply | cancel")
    reply: str | None = Field(None, description="the answer for action 'reply' (and 'cancel')")

    @field_validator("action")
    @classmethod
    def _action(cls, v: str) -> str:
        if v in ACTIONS or re.fullmatch(r"form:[A-Za-z0-9_-]+", v):
            return v
        raise ValueError("expected one of form:<name>, faq, handoff, reply, cancel")


class IntentsConfig(Strict):
    app: str | None = Field(
        None, description="a trained text-classification app; None: embedded examples, nearest centroid"
    )
    threshold: float = Field(0.5, ge=0, le=1, description="below this confidence: a clarifying question")
    items: dict[str, IntentDef] = Field(description="the intents by name")


class EntityDef(Strict):
    regex: str = Field(description="a regular expression; its first group (or the whole match) is the value")
    normalize: Literal["upper", "lower", "none"] = Field("upper", description="case of the extracted value")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class SlotDef(Strict):
    entity: str | None = Field(None, description="the entity filling this slot; defaults to the slot's name")
    ask: str = Field(description="the question asking for it")
    hint: str = Field("", description="added when re-asking, e.g. 'It looks like A1234.'")


class FormDef(Strict):
    slots: dict[str, SlotDef] = Field(description="the values to collect, asked for in this order")
    lookup: str = Field(description="one SELECT with :slot parameters, run read-only on the database")
    reply: str = Field(description="formatted with the first row's columns and the slots")
    not_found: str = Field(
        "I could not find anything for {slots}. Could you check and send it again?",
        description="the reply when the look-up finds no row ({slots}: the values given)",
    )


class FaqConfig(Strict):
    folder: str | None = Field(
        "demo:faq", description="markdown Q/A files ('## question' + answer); demo:faq is bundled"
    )
    kb: str | None = Field(None, description="or a luodi.rag knowledge base (answers are its best passage)")
    threshold: float = Field(0.55, ge=0, le=1, description="the FAQ answers when its best match scores this")


class HandoffConfig(Strict):
    max_clarifications: int = Field(1, ge=0, description="clarifying questions in a row before a human")
    max_reasks: int = Field(2, ge=0, description="failed attempts to fill one slot before a human")
    message: str = Field(
        "I am passing you to a human colleague (ticket #{ticket}). They will answer here shortly.",
        description="the reply when a human takes over ({ticket}: the ticket id)",
    )


class AbuseConfig(Strict):
    words: list[str] = Field(default_factory=list, description="words that count as abuse (whole words)")
    reply: str = Field("Let's keep this respectful, please. I am here to help.", description="the answer")
    max_strikes: int = Field(2, ge=1, description="abusive messages before a human takes over")


class LlmConfig(Strict):
    enabled: bool = Field(False, description="phrase FAQ answers with the chat model (greedy); off: exact text")
    model: str | None = Field(None, description="the chat model (a model source, or openai:MODEL[@URL] for an "
                              "OpenAI-compatible upstream); default: the server's")


class AssistantOptions(Strict):
    greeting: str = Field("Hello! How can I help you today?", description="the first message")
    database: str = Field("demo", description="demo | path to an SQLite file the forms look up")
    encoder: str = Field("bundled:minilm-l6", description="sentence encoder for intents and the FAQ")
    intents: IntentsConfig = Field(description="what customers ask for, and what to do about it")
    entities: dict[str, EntityDef] = Field(default_factory=dict, description="values found by regex")
    forms: dict[str, FormDef] = Field(default_factory=dict, description="slots to collect, then a look-up")
    faq: FaqConfig = Field(default_factory=FaqConfig, description="general questions answered from a FAQ")
    handoff: HandoffConfig = Field(default_factory=HandoffConfig, description="when a human takes over")
    abuse: AbuseConfig = Field(default_factory=AbuseConfig, description="abusive messages")
    llm: LlmConfig = Field(default_factory=LlmConfig, description="optional phrasing by the chat model")
    clarify: str = Field(
        "Sorry, I am not sure I understood. Is it about {options}? You can also rephrase.",
        description="the clarifying question ({options}: the likeliest intents' descriptions)",
    )
    back_to_form: str = Field(
        "Now, back to your request: {ask}", description="after an interruption, back to the open question"
    )

    @model_validator(mode="after")
    def _refs(self) -> AssistantOptions:
        for name, it in self.intents.items.items():
            if it.action.startswith("form:") and it.action[5:] not in self.forms:
                raise ValueError(f"intents.items.{name}.action: form '{it.action[5:]}' is not defined under forms")
            if it.action == "reply" and not it.reply:
                raise ValueError(f"intents.items.{name}: action 'reply' needs a 'reply' text")
            if not self.intents.app and not it.examples:
                raise ValueError(f"intents.items.{name}: give 'examples' (or set intents.app to a classifier)")
        for fname, f in self.forms.items():
            for sname, sl in f.slots.items():
                ent = sl.entity or sname
                if ent not in self.entities:
                    raise ValueError(f"forms.{fname}.slots.{sname}: entity '{ent}' is not defined under entities")
        return self


def parse_options(cfg: AppConfig) -> AssistantOptions:
    """The app's options, or a ConfigError naming the offending key."""
    if cfg.task != "assistant":
        raise ConfigError(f"app '{cfg.name}' has task '{cfg.task}', not 'assistant'", param="task")
    try:
        return AssistantOptions.model_validate(cfg.options)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"{cfg.name}: options")) from e
