"""Sign-in and code forms. Field names are Django's and django-otp's: ``username``,
``password``, ``otp_token``."""

from django import forms

__all__ = ["CodeInput", "PasswordForm", "TokenForm"]


class PasswordForm(forms.Form):
    username = forms.CharField(max_length=150, widget=forms.TextInput(
        attrs={"autocomplete": "username", "autofocus": True, "autocapitalize": "none"}))
    password = forms.CharField(strip=False, max_length=1024, widget=forms.PasswordInput(
        attrs={"autocomplete": "current-password"}))


class CodeInput(forms.TextInput):
    """A code field that comes back empty after a wrong code: it must be typed afresh."""

    def format_value(self, value: object) -> None:
        return None


class TokenForm(forms.Form):
    otp_token = forms.CharField(
        label="Code", max_length=32, min_length=6,
        widget=CodeInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                "autofocus": True, "spellcheck": "false"}),
        help_text="The 6-digit code from your authenticator app, or one of your backup codes.",
    )
