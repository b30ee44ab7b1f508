"""Template context: which roles the signed-in user holds (for navigation only)."""

from django.http import HttpRequest

from portal.accounts.roles import roles_of


def roles(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user_roles": set()}
    return {"user_roles": roles_of(user)}
