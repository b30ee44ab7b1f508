"""The environment is read in one place, and a portal that must not start, does not."""

from __future__ import annotations

import ipaddress

import pytest

from portal.config import ConfigError, load_config

STRONG = "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz"


def test_defaults_describe_the_embedded_demo():
    config = load_config({"PORTAL_SECRET_KEY": STRONG})
    assert config.database_url is None and config.redis_url is None
    assert config.debug is False
    assert config.guacd_port == 4822
    assert config.trusted_proxies == ()


@pytest.mark.parametrize("key", ["short", "a" * 60, "ab" * 30])
def test_weak_secret_key_refuses_to_start(key):
    with pytest.raises(ConfigError, match="PORTAL_SECRET_KEY is too weak"):
        load_config({"PORTAL_SECRET_KEY": key})


def test_secrets_can_come_from_mounted_files(tmp_path):
    secret = tmp_path / "key"
    secret.write_text(STRONG + "\n")
    assert load_config({"PORTAL_SECRET_KEY": f"file://{secret}"}).secret_key == STRONG


def test_a_missing_secret_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config({"PORTAL_SECRET_KEY": f"file://{tmp_path}/nope"})


def test_trusted_proxies_are_parsed_as_networks():
    config = load_config({"PORTAL_SECRET_KEY": STRONG, "PORTAL_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"})
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32"))


@pytest.mark.parametrize(("name", "value", "message"), [
    ("PORTAL_TRUSTED_PROXIES", "10.0.0.0/33", "not an IP network"),
    ("GUACD_PORT", "http", "must be a port number"),
    ("GUACD_PORT", "70000", "between 1 and 65535"),
    ("PORTAL_DEBUG", "maybe", "must be 1 or 0"),
])
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config({"PORTAL_SECRET_KEY": STRONG, name: value})
    assert name in str(info.value)


def test_allowed_hosts_come_from_the_environment():
    config = load_config({"PORTAL_SECRET_KEY": STRONG, "PORTAL_ALLOWED_HOSTS": "portal.example.com, lb"})
    assert config.allowed_hosts == ("portal.example.com", "lb")


def test_vault_keys_are_read_newest_first_from_a_list_or_a_file(tmp_path):
    keys = tmp_path / "vault"
    keys.write_text("new-key, old-key\n")
    assert load_config({"PORTAL_SECRET_KEY": STRONG, "PORTAL_VAULT_KEYS": f"file://{keys}"}).vault_keys == (
        "new-key", "old-key")
