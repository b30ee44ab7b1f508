"""Factor "idp" (the company sign-in's MFA): tiers that counted codes keep counting it.

Before this, an SSO session verified by the IdP's MFA read as a code ("otp") or a passkey
("hwk") from the IdP's amr. Now it reads as its own factor, ``idp``. A class that named
``totp`` accepted the IdP's MFA in practice, so ``idp`` is added there (today's behaviour
holds); a class that names only ``passkey`` does not get it (a passkey-only tier now means
the portal's own passkey). A class left out accepts any factor, ``idp`` included.
"""

from django.db import migrations, models

_ALL = {"passkey", "totp", "idp"}


def _with_idp(factors: dict) -> dict:
    widened = {}
    for action_class, listed in (factors or {}).items():
        listed = sorted(set(listed) | ({"idp"} if "totp" in listed else set()))
        if set(listed) != _ALL:  # a class naming every factor is left out (one spelling)
            widened[action_class] = listed
    return widened


def add_idp(apps, schema_editor):
    Tier = apps.get_model("tiers", "Tier")
    for tier in Tier.objects.exclude(accepted_factors={}):
        widened = _with_idp(tier.accepted_factors)
        if widened != tier.accepted_factors:
            Tier.objects.filter(pk=tier.pk).update(accepted_factors=widened)


def remove_idp(apps, schema_editor):
    Tier = apps.get_model("tiers", "Tier")
    for tier in Tier.objects.exclude(accepted_factors={}):
        narrowed = {c: [f for f in listed if f != "idp"] for c, listed in tier.accepted_factors.items()}
        Tier.objects.filter(pk=tier.pk).update(accepted_factors={c: f for c, f in narrowed.items() if f})


class Migration(migrations.Migration):

    dependencies = [
        ('tiers', '0006_tier_rules_declared_once'),
    ]

    operations = [
        migrations.AlterField(
            model_name='tier',
            name='accepted_factors',
            field=models.JSONField(blank=True, default=dict, help_text='Per action class, the second factors that count: totp (an authenticator app or backup code), passkey, and idp (the MFA of the company sign-in, for SSO sessions). A class with none named accepts any.', verbose_name='Second factors that count'),
        ),
        migrations.RunPython(add_idp, remove_idp),
    ]
