"""An admin revokes a person's SSO link: that IdP account no longer signs in as her.

The link is the only thing that ties the IdP's ``sub`` to the portal account, so removing it
means the next sign-in through that IdP is a stranger again (a new account, or an e-mail match
where the IdP allows it). Sessions that IdP account started end at once, the way a back-channel
logout ends them (:func:`portal.sso.sessions.end_sessions`), and the IdP's MFA device goes
with the link. Audited with the admin's name.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from portal.audit.chain import record
from portal.sso.models import SsoLink
from portal.sso.oidc import LogoutClaims
from portal.sso.sessions import end_sessions

__all__ = ["revoke_link"]


def revoke_link(link_id: int, *, by: AbstractBaseUser, client_address: str = "",
                request_id: str = "") -> SsoLink | None:
    """Remove the link and end the sessions it started; None when it is already gone."""
    with transaction.atomic():
        link = SsoLink.objects.select_for_update().select_related("user").filter(pk=link_id).first()
        if link is None:
            return None
        ended = end_sessions(LogoutClaims(issuer=link.issuer, jti="", sub=link.subject, sid=None, exp=0))
        link.delete()
        record("sso.link_revoke", outcome="success", actor=by.get_username(), client_address=client_address,
               request_id=request_id,
               detail={"user": link.user.get_username(), "provider": link.provider, "issuer": link.issuer,
                       "subject": link.subject, "sessions_ended_for": ended})
    return link
