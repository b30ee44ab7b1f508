"""The credential vault: sealed at rest, rotatable, and the secret never reaches a browser or a log."""

from __future__ import annotations

import logging

import pytest
from channels.db import database_sync_to_async
from cryptography.fernet import Fernet
from django.core.serializers import serialize

from portal.audit.models import AuditEvent
from streaming.desktop import vault
from streaming.desktop.models import StreamSession, TargetCredential
from streaming.desktop.vault import TargetSecret, VaultError
from tests.conftest import sign_in
from tests.streaming.desktop.conftest import Browser, communicator, open_page

SECRET = TargetSecret(username="svc-ops", password="S3cret-Target-Pa55!", private_key="-----BEGIN KEY-----x")


@pytest.mark.django_db
def test_the_database_holds_only_ciphertext(vnc_resource):
    vault.store(vnc_resource, SECRET)
    sealed = TargetCredential.objects.get(resource=vnc_resource).sealed
    assert "svc-ops" not in sealed and SECRET.password not in sealed
    assert vault.secret_for(vnc_resource.pk) == SECRET
    assert SECRET.password not in repr(SECRET) and SECRET.password not in repr(TargetCredential.objects.get())


@pytest.mark.django_db
def test_rotation_reseals_with_the_new_key_and_the_old_key_can_then_go(settings, vnc_resource):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PORTAL_VAULT_KEYS = [old]
    vault.store(vnc_resource, SECRET)
    settings.PORTAL_VAULT_KEYS = [new, old]
    assert vault.rotate() == 1
    settings.PORTAL_VAULT_KEYS = [new]
    assert vault.secret_for(vnc_resource.pk) == SECRET
    settings.PORTAL_VAULT_KEYS = [old]
    with pytest.raises(VaultError, match="cannot be opened"):
        vault.secret_for(vnc_resource.pk)


def test_a_bad_key_stops_with_a_clear_message(settings):
    settings.PORTAL_VAULT_KEYS = ["not-a-key"]
    with pytest.raises(VaultError, match="not a Fernet key"):
        vault.vault_keys()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_the_target_password_is_in_nothing_the_browser_gets_nor_in_any_log(
        client, employee, vnc_resource, vnc_target, guacd, caplog, capfd):
    password = vnc_target.password
    caplog.set_level(logging.DEBUG)
    await database_sync_to_async(sign_in)(client, employee)
    page = await database_sync_to_async(open_page)(client, vnc_resource.slug)
    comm = communicator(page)
    assert (await comm.connect(timeout=10))[0]
    browser = Browser(comm)
    await browser.until(lambda op, args: op == "sync")
    await browser.send("10.disconnect;")
    await browser.until_closed()

    seen_by_browser = page.html + "".join(browser.received)
    logs = caplog.text + "".join(capfd.readouterr()) + guacd.log_path.read_text(errors="replace")
    stored = await database_sync_to_async(lambda: serialize("json", [
        *StreamSession.objects.all(), *AuditEvent.objects.all()]))()
    assert password not in seen_by_browser
    assert password not in logs
    assert password not in stored
    assert "desktop.start" in stored  # the scan did look at the session's audit trail
