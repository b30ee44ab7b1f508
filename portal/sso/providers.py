"""The identity providers the portal trusts, as typed values (from PORTAL_OIDC_PROVIDERS, and
from the admin: :class:`portal.sso.models.OidcProvider`).

Pure: no Django, no network, so :mod:`portal.config` can validate the environment at start and
refuse a portal whose IdP list is wrong, with a message naming the IdP and the key; an IdP
entered in the admin is checked by the same rules (:func:`parse_provider`).

Both lists are merged by :func:`merge_providers`: on a name clash the **environment wins**.
The environment is what the deployment declares (reviewed, versioned, the same on every
replica); an admin entry of the same name cannot redirect its sign-ins to another issuer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_MFA_AMR", "IdentityProvider", "ProviderConfigError", "merge_providers", "parse_provider",
           "parse_providers"]

# RFC 8176 method references that mean "more than one factor was checked".
DEFAULT_MFA_AMR = ("mfa", "otp", "hwk")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_KEYS = {"name", "label", "issuer", "client_id", "client_secret", "scopes", "groups_claim", "groups",
         "default_groups", "mfa_amr", "mfa_acr", "link_by_email"}


class ProviderConfigError(ValueError):
    """PORTAL_OIDC_PROVIDERS describes an IdP the portal must not trust as written."""


@dataclass(frozen=True)
class IdentityProvider:
    """One OpenID Provider and what its answers mean in the portal."""

    name: str
    label: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ("openid", "email", "profile", "groups")
    groups_claim: str = "groups"
    # IdP group -> portal groups (roles such as "employee" or groups resources are shared with).
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Given to everyone this IdP signs in (managed like the mapped ones).
    default_groups: tuple[str, ...] = ("employee",)
    mfa_amr: tuple[str, ...] = DEFAULT_MFA_AMR
    mfa_acr: tuple[str, ...] = ()
    # Match an existing local account by a verified e-mail on first sign-in (off unless allowed).
    link_by_email: bool = False

    @property
    def managed_groups(self) -> frozenset[str]:
        """The portal groups this IdP decides membership of (all others stay as admins set them)."""
        return frozenset(self.default_groups).union(*self.groups.values())


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ProviderConfigError(f"{where} must be a list of names")
    return tuple(value)


def _issuer(value: Any, where: str) -> str:
    parts = urlsplit(str(value or ""))
    if parts.scheme == "https" and parts.hostname:
        pass
    elif not (parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS):
        raise ProviderConfigError(f"{where}.issuer must be an https:// URL (http:// only on localhost), "
                                  f"got {value!r}")
    if parts.query or parts.fragment:
        raise ProviderConfigError(f"{where}.issuer must have no query or fragment")
    return str(value).rstrip("/")


def _one(raw: Any, index: int) -> IdentityProvider:
    return parse_provider(raw, "PORTAL_OIDC_PROVIDERS", f"PORTAL_OIDC_PROVIDERS[{index}]")


def parse_provider(raw: Any, source: str, where: str = "") -> IdentityProvider:
    """One IdP from its keys; ``source`` names where it came from in error messages."""
    where = where or source
    if not isinstance(raw, dict):
        raise ProviderConfigError(f"{where} must be an object with name, issuer, client_id, client_secret")
    if unknown := sorted(set(raw) - _KEYS):
        raise ProviderConfigError(f"{where} has unknown keys {unknown} (known: {sorted(_KEYS)})")
    name = str(raw.get("name", ""))
    if not _NAME.match(name):
        raise ProviderConfigError(f"{where}.name must be lower-case letters, digits and '-' (got {name!r})")
    where = f"{source}[{name}]"
    for key in ("client_id", "client_secret"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ProviderConfigError(f"{where}.{key} is required")
    groups = raw.get("groups", {})
    if not isinstance(groups, dict):
        raise ProviderConfigError(f"{where}.groups must map IdP group names to lists of portal groups")
    scopes = _strings(raw.get("scopes", IdentityProvider.scopes), f"{where}.scopes")
    if "openid" not in scopes:
        raise ProviderConfigError(f"{where}.scopes must include openid")
    link_by_email = raw.get("link_by_email", False)
    if not isinstance(link_by_email, bool):
        raise ProviderConfigError(f"{where}.link_by_email must be true or false")
    return IdentityProvider(
        name=name, label=str(raw.get("label") or name), issuer=_issuer(raw.get("issuer"), where),
        client_id=raw["client_id"], client_secret=raw["client_secret"], scopes=scopes,
        groups_claim=str(raw.get("groups_claim") or "groups"),
        groups={str(k): _strings(v, f"{where}.groups[{k}]") for k, v in groups.items()},
        default_groups=_strings(raw.get("default_groups", ["employee"]), f"{where}.default_groups"),
        mfa_amr=_strings(raw.get("mfa_amr", list(DEFAULT_MFA_AMR)), f"{where}.mfa_amr"),
        mfa_acr=_strings(raw.get("mfa_acr", []), f"{where}.mfa_acr"),
        link_by_email=link_by_email,
    )


def parse_providers(raw: Any) -> tuple[IdentityProvider, ...]:
    """Validate the decoded PORTAL_OIDC_PROVIDERS list; names must be unique."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProviderConfigError("PORTAL_OIDC_PROVIDERS must be a JSON list of IdPs")
    providers = tuple(_one(item, i) for i, item in enumerate(raw))
    names = [p.name for p in providers]
    if len(names) != len(set(names)):
        raise ProviderConfigError(f"PORTAL_OIDC_PROVIDERS names must be unique (got {names})")
    return providers


def merge_providers(from_env: tuple[IdentityProvider, ...],
                    from_admin: tuple[IdentityProvider, ...]) -> tuple[IdentityProvider, ...]:
    """The environment's IdPs, then the admin's whose names the environment does not use."""
    taken = {p.name for p in from_env}
    return from_env + tuple(p for p in from_admin if p.name not in taken)
