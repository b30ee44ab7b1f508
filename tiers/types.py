"""The decision's vocabulary: frozen inputs gathered before deciding, and the result.

Everything here is plain data, so :func:`tiers.decision.decide` stays a pure function that
the proxy, the desktop broker, "My apps" and the admin's policy simulator all share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = [
    "FACTOR_WORDS", "Action", "ActionClass", "ActionKind", "Decision", "DecisionInput", "DeviceInfo",
    "Factor", "Obligation", "Outcome", "Reason", "ResourceInfo", "StreamControl", "Subject", "Text",
    "TierPolicy", "ZoneInfo", "factor_words",
]


class Outcome(StrEnum):
    """What the decision says. A ``StrEnum``: ``outcome == "step_up"`` still holds."""

    ALLOW = "allow"
    STEP_UP = "step_up"
    DENY = "deny"
    ISOLATE = "isolate"


class ActionKind(StrEnum):
    """The verb of an enforcement point (``Action.kind``)."""

    HTTP = "http"
    VIEW = "view"
    DESKTOP_OPEN = "desktop.open"
    DESKTOP_CONTINUE = "desktop.continue"
    CLIPBOARD_IN = "clipboard.in"
    CLIPBOARD_OUT = "clipboard.out"
    FILE_TRANSFER = "file.transfer"


class Obligation(StrEnum):
    """What an enforcement point must do alongside an allow: the keys of ``Decision.obligations``."""

    RECORD = "record"
    READ_ONLY = "read_only"
    WATERMARK = "watermark"
    CLIPBOARD_IN = "clipboard_in"
    CLIPBOARD_OUT = "clipboard_out"
    FILE_TRANSFER = "file_transfer"
    MFA_MAX_AGE = "mfa_max_age"
    SESSION_MAX_SECONDS = "session_max_seconds"
    IDLE_SECONDS = "idle_seconds"
    REAUTH_INTERVAL_SECONDS = "reauth_interval_seconds"
    RATE_LIMIT_PER_MINUTE = "rate_limit_per_minute"


class Text(str):
    """A sentence for people that can still be translated where it is shown.

    It is the English sentence (so it compares, prints and serialises as one), and keeps
    its ``template`` and ``params``: a page translates the template first, then formats
    (:func:`tiers.pages.translated`). The decision stays free of Django's translation
    machinery and of the reader's language; it writes ``_ = Text``, so ``makemessages`` finds
    the templates as it finds any ``_("...")``.
    """

    template: str
    params: Mapping[str, Any]

    def __new__(cls, template: str, **params: Any) -> Text:
        text = super().__new__(cls, template % params if params else template)
        text.template, text.params = template, params
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_text, (self.template, dict(self.params)))


def _text(template: str, params: dict[str, Any]) -> Text:
    return Text(template, **params)


class ActionClass(StrEnum):
    READ = "read"
    WRITE = "write"
    SENSITIVE = "sensitive"


class StreamControl(StrEnum):
    """What a tier lets a desktop session do with clipboard and files."""

    DENY = "deny"
    ALLOW = "allow"
    STEP_UP = "step_up"


class Factor(StrEnum):
    """A second factor a tier can name as counting (DESIGN.md section 8).

    ``totp`` is any code: the authenticator app's, or a backup code (both can be phished and
    relayed); ``passkey`` is a WebAuthn credential, bound to the portal's origin; ``idp`` is the
    MFA the company's identity provider did for an SSO sign-in (or a step-up there): the portal
    did not see which factor it was, so a tier says whether it counts (docs/decisions/0028).
    """

    TOTP = "totp"
    PASSKEY = "passkey"
    IDP = "idp"


# How each factor is named in a sentence, in the order a sentence lists them.
FACTOR_WORDS = {Factor.PASSKEY: "a passkey", Factor.TOTP: "an authenticator app code",
                Factor.IDP: "your company sign-in's MFA"}


def factor_words(factors: frozenset[str]) -> str:
    """``{"passkey", "totp"}`` -> ``a passkey or an authenticator app code`` (fixed order)."""
    return " or ".join(words for factor, words in FACTOR_WORDS.items() if factor in factors)


@dataclass(frozen=True)
class Subject:
    """Who asks: the signed-in user as this session knows them."""

    username: str
    groups: frozenset[str] = frozenset()
    is_active: bool = True
    mfa_age: float | None = None  # seconds since the last MFA in this session; None = never
    mfa_factor: str | None = None  # the Factor of that last MFA; None = not known


@dataclass(frozen=True)
class DeviceInfo:
    """The device the request comes from, as far as the portal knows it."""

    id: str = ""
    registered: bool = False
    trusted: bool = False


@dataclass(frozen=True)
class ZoneInfo:
    """The network zone of the client address (``internet`` when no zone matches)."""

    name: str = "internet"
    trusted: bool = False
    address: str = ""


@dataclass(frozen=True)
class TierPolicy:
    """A tier's rules, as the decision needs them."""

    name: str
    rank: int = 0
    access_mode: str = "proxy"  # proxy | stream | deny
    mfa_read: int | None = None  # seconds; None = not needed; 0 = for this very action
    mfa_write: int | None = None
    mfa_sensitive: int | None = 0
    device_trust_required: bool = False
    allowed_zones: frozenset[str] = frozenset()  # empty = any zone
    approval_required: bool = False
    recording: bool = False
    read_only: bool = False
    watermark: bool = False
    clipboard_in: StreamControl = StreamControl.DENY
    clipboard_out: StreamControl = StreamControl.DENY
    file_transfer: StreamControl = StreamControl.DENY
    session_max_seconds: int = 8 * 3600
    idle_seconds: int = 30 * 60
    reauth_interval_seconds: int = 30
    rate_limit_per_minute: int | None = None
    # (action class, factors that count for it); a class not listed accepts every factor
    accepted_factors: tuple[tuple[str, frozenset[str]], ...] = ()

    def factors_for(self, action_class: ActionClass) -> frozenset[str]:
        """The factors that count for ``action_class``; empty = any factor counts."""
        return next((f for c, f in self.accepted_factors if c == action_class), frozenset())

    def mfa_freshness(self, action_class: ActionClass) -> int | None:
        return {ActionClass.READ: self.mfa_read, ActionClass.WRITE: self.mfa_write,
                ActionClass.SENSITIVE: self.mfa_sensitive}[action_class]


@dataclass(frozen=True)
class ResourceInfo:
    """A catalogued resource and who it is shared with."""

    slug: str
    name: str
    kind: str  # web | vnc | ssh | rdp
    tier: TierPolicy
    allowed_groups: frozenset[str] = frozenset()
    allowed_users: frozenset[str] = frozenset()
    enabled: bool = True


@dataclass(frozen=True)
class Action:
    """What is attempted. ``kind`` names the enforcement point's verb."""

    kind: str  # an ActionKind: http | desktop.open | desktop.continue | clipboard.* | file.transfer | view
    action_class: ActionClass = ActionClass.READ
    method: str = ""
    path: str = ""
    # The digest of the very request a one-time grant is for (a held form post's body
    # included): a grant confirmed for one request never serves another with the same
    # method and path. Empty: the action is named by method and path alone.
    digest: str = ""


@dataclass(frozen=True)
class DecisionInput:
    """Everything :func:`decide` looks at, gathered beforehand (the only I/O)."""

    subject: Subject
    device: DeviceInfo
    zone: ZoneInfo
    resource: ResourceInfo
    action: Action
    now: float
    grant_expires_at: float | None = None  # an approved just-in-time grant, if any
    one_time_mfa: bool = False  # a fresh MFA bound to exactly this action is waiting
    one_time_mfa_factors: frozenset[str] = frozenset()  # the factors that confirmed it
    risk_score: float = 0.0
    risk_signals: tuple[str, ...] = ()
    # The request comes from the user's own isolated browser (a disposable slot that reaches
    # the app only through the proxy): a stream tier's web app is reached this way only.
    via_isolation: bool = False


@dataclass(frozen=True)
class Reason:
    """One rule that fired: its name, a sentence for people, the values it saw, and the remedy."""

    rule: str
    message: str  # often a Text: English, translatable where it is shown
    values: Mapping[str, Any] = field(default_factory=dict)
    remedy: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "message": str(self.message), "values": dict(self.values),
                "remedy": str(self.remedy)}


@dataclass(frozen=True)
class Decision:
    """The outcome, why, and what the enforcement point must do alongside (obligations)."""

    outcome: Outcome
    reasons: tuple[Reason, ...]
    obligations: Mapping[Obligation, Any] = field(default_factory=lambda: MappingProxyType({}))
    consumed_one_time_mfa: bool = False

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    @property
    def denial(self) -> Reason | None:
        """The reason that decided a non-allow outcome (the first one)."""
        return None if self.allowed else self.reasons[0]

    def reasons_as_data(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.reasons]
