"""The customer-service assistant (`task: assistant`): a deterministic dialogue manager in Python.

An App YAML declares, under `options` (options.py, validated strictly): intents (an embedded example set
classified with the bundled encoder by nearest centroid, or a trained text-classification app such as
banking77), entities (regex), forms with required slots (asked for, re-asked, corrected), FAQ answers (a
markdown Q/A folder or a luodi.rag knowledge base), order/account look-ups against the demo database, a
confidence threshold with a clarifying question, then a hand-off to a human: a ticket a human agent
answers; the answer is appended to the customer's thread (role "human_agent").

    a = load_assistant("customer-service")        # a demo app name or an App YAML path
    turn = a.respond("where is my order A1002?")  # Turn(thread_id, reply, intent, confidence, ...)
    a.respond("thanks", thread_id=turn.thread_id)
    answer_ticket(ticket_id, "We refunded you.")  # the customer's next poll sees it

The parts, read in this order: options (the YAML), perception (intents, entities, FAQ), dialogue (the
turns), tickets (hand-off), demo (the bank database and FAQ), conversation_tests (YAML test suites).
"""

from luodi.agent.assistant.conversation_tests import ConvSuite, load_tests, run_tests
from luodi.agent.assistant.demo import DEMO_APP, DEMO_KB, build_demo_db, demo_db_path, ensure_demo
from luodi.agent.assistant.dialogue import MAX_MESSAGE, Assistant, Turn, load_assistant
from luodi.agent.assistant.options import AssistantOptions, parse_options
from luodi.agent.assistant.tickets import answer_ticket, create_ticket, get_ticket, list_tickets

__all__ = [
    "DEMO_APP",
    "DEMO_KB",
    "MAX_MESSAGE",
    "Assistant",
    "AssistantOptions",
    "ConvSuite",
    "Turn",
    "answer_ticket",
    "build_demo_db",
    "create_ticket",
    "demo_db_path",
    "ensure_demo",
    "get_ticket",
    "list_tickets",
    "load_assistant",
    "load_tests",
    "parse_options",
    "run_tests",
]
