"""The decision's vocabulary is typed (enums, translatable sentences) yet reads as plain strings
to every enforcement point that compares, stores or sends it."""

from __future__ import annotations

import json
import pickle

from tiers import pages
from tiers.decision import decide, obligations_for
from tiers.types import (
    Action,
    ActionClass,
    ActionKind,
    DecisionInput,
    DeviceInfo,
    Obligation,
    Outcome,
    ResourceInfo,
    Subject,
    Text,
    TierPolicy,
    ZoneInfo,
)

TIER = TierPolicy(name="high", access_mode="stream", recording=True, mfa_read=None)
WIKI = ResourceInfo(slug="wiki", name="Wiki", kind="vnc", tier=TIER, allowed_groups=frozenset({"staff"}))


def _decide(resource: ResourceInfo = WIKI, kind: str = ActionKind.DESKTOP_OPEN):
    return decide(DecisionInput(subject=Subject("erin", frozenset({"staff"})), device=DeviceInfo(),
                                zone=ZoneInfo(), resource=resource, action=Action(kind, ActionClass.READ),
                                now=1000.0))


def test_outcomes_action_kinds_and_obligations_still_compare_as_the_strings_they_were():
    decision = _decide(kind="desktop.open")  # a plain string still names the action

    assert decision.outcome == "allow" and decision.outcome is Outcome.ALLOW
    assert decision.obligations["record"] is True
    assert decision.obligations.get("clipboard_in") == "deny"
    assert set(decision.obligations) == set(Obligation)
    assert ActionKind.HTTP == "http" and f"{Outcome.STEP_UP}" == "step_up"


def test_obligations_are_keyed_by_their_enum_and_serialise_as_plain_json():
    obligations = obligations_for(TIER, Action(ActionKind.DESKTOP_OPEN))

    assert json.loads(json.dumps(dict(obligations)))["record"] is True
    assert Obligation.RECORD in obligations


def test_a_reason_is_english_text_that_stores_and_travels_as_a_string():
    reason = _decide(resource=ResourceInfo("off", "Old wiki", "vnc", TIER, enabled=False)).reasons[0]

    assert reason.message == "Old wiki is switched off by an admin."
    assert isinstance(reason.message, Text) and reason.message.template == "%(name)s is switched off by an admin."
    assert json.loads(json.dumps(reason.as_dict()))["message"] == "Old wiki is switched off by an admin."
    copy = pickle.loads(pickle.dumps(reason.message))
    assert (copy, copy.template, dict(copy.params)) == (reason.message, reason.message.template,
                                                        {"name": "Old wiki"})


def test_a_page_translates_the_template_first_and_then_fills_in_the_values(monkeypatch):
    german = {"%(name)s is switched off by an admin.": "%(name)s ist abgeschaltet.",
              "Ask the resource's owner when it will be back.": "Fragen Sie den Verantwortlichen."}
    monkeypatch.setattr(pages, "gettext", lambda text: german.get(text, text))
    reason = _decide(resource=ResourceInfo("off", "Old wiki", "vnc", TIER, enabled=False)).reasons[0]

    assert pages.translated(reason.message) == "Old wiki ist abgeschaltet."
    assert pages.translated(reason.remedy) == "Fragen Sie den Verantwortlichen."
    assert pages.translated("not a Text") == "not a Text"
