"""Print the current TOTP code of a demo user (for trying the demo without a phone)."""

from django.core.management.base import BaseCommand, CommandError
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from demo.management.commands.seed_demo import DEMO_USERS


class Command(BaseCommand):
    help = "Print the current TOTP code of a demo user (demo users only)."

    def add_arguments(self, parser):
        parser.add_argument("username", choices=[u["username"] for u in DEMO_USERS])

    def handle(self, *args, **options):
        device = TOTPDevice.objects.filter(user__username=options["username"], confirmed=True).first()
        if device is None:
            raise CommandError("no TOTP device: run `python manage.py seed_demo` first")
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        self.stdout.write(f"{totp.token():0{device.digits}d}")
