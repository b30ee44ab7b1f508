"""Issue 4 acceptance: what a catalogued echo upstream receives, and what it never does."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def echo(web_resource, echo_upstream):
    return web_resource("echo", echo_upstream.url)


def _seen(response) -> dict:
    assert response.status_code == 200, response.text[:500]
    report = response.json()
    report["header_map"] = {}
    for name, value in report["headers"]:
        report["header_map"].setdefault(name, []).append(value)
    return report


def _verify_with_cryptography_only(token: str, jwk: dict) -> dict:
    """Verify ES256 by hand with `cryptography`: any ES256 implementation must agree."""
    def b64(part: str) -> bytes:
        return jwt.utils.base64url_decode(part.encode())

    head, body, sig = token.split(".")
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(b64(jwk["x"])), int.from_bytes(b64(jwk["y"])),
                                            ec.SECP256R1())
    raw = b64(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    numbers.public_key().verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return json.loads(b64(body))


def test_upstream_receives_an_assertion_that_verifies_against_the_jwks(browser_for, worker, echo,
                                                                       portal_url):
    seen = _seen(browser_for(worker).get("/apps/echo/reports?year=2025"))
    [token] = seen["header_map"]["x-portal-assertion"]
    jwks = browser_for().get("/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]

    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="echo",
                        issuer=portal_url.replace("127.0.0.1", "127.0.0.1"))
    assert claims == _verify_with_cryptography_only(token, jwk)
    assert claims["sub"] == str(worker.pk)
    assert claims["email"] == worker.email
    assert claims["tier"] == "t-echo"
    assert "employee" in claims["groups"]
    assert claims["amr"] == ["pwd", "otp"]
    assert isinstance(claims["mfa_time"], int) and isinstance(claims["auth_time"], int)
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["jti"]


def test_the_path_query_and_method_reach_the_upstream_unchanged(browser_for, worker, echo):
    seen = _seen(browser_for(worker).request("PATCH", "/apps/echo/a/b%20c?x=1&y=%2F", content=b"hi"))
    assert seen["method"] == "PATCH"
    assert seen["raw_path"] == "/a/b%20c"
    assert seen["query"] == "x=1&y=%2F"
    assert seen["body_length"] == 2


def test_a_forged_assertion_or_identity_header_never_reaches_the_upstream(browser_for, worker, echo):
    forged = {
        "X-Portal-Assertion": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        "X-Forwarded-User": "admin", "X-Forwarded-Email": "ceo@example.com",
        "X-Forwarded-Groups": "admin", "X-Auth-Request-User": "admin",
        "X-Auth-Request-Email": "ceo@example.com", "Remote-User": "admin", "X-Remote-User": "admin",
        "X-Forwarded-For": "10.9.9.9", "X-Real-IP": "10.9.9.9", "Forwarded": "for=10.9.9.9",
        "X-Forwarded-Host": "evil.example", "X-Forwarded-Prefix": "/admin",
    }
    seen = _seen(browser_for(worker).get("/apps/echo/whoami", headers=forged))
    headers = seen["header_map"]
    assert headers["x-portal-assertion"] != [forged["X-Portal-Assertion"]]
    assert len(headers["x-portal-assertion"]) == 1
    for name in ("x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-auth-request-user",
                 "x-auth-request-email", "remote-user", "x-remote-user", "x-real-ip", "forwarded"):
        assert name not in headers, name
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] != ["evil.example"]
    assert headers["x-forwarded-prefix"] == ["/apps/echo"]


def test_neither_the_session_nor_the_csrf_cookie_reaches_the_upstream(browser_for, worker, echo):
    client = browser_for(worker, csrftoken="portal-csrf-secret", app_theme="dark")
    seen = _seen(client.get("/apps/echo/"))
    cookies = seen["header_map"]["cookie"]
    assert cookies == ["app_theme=dark"]
    assert client.cookies["sessionid"] not in json.dumps(seen)
    assert "portal-csrf-secret" not in json.dumps(seen)


def test_an_anonymous_request_never_reaches_the_upstream(browser_for, echo, echo_upstream):
    before = browser_for().get(f"{echo_upstream.url}hits").json()["count"]
    response = browser_for().post("/apps/echo/notes", data={"x": "1"})
    assert response.status_code in (302, 303)
    assert response.headers["location"].startswith("/accounts/login/?next=%2Fapps%2Fecho%2Fnotes")
    assert browser_for().get(f"{echo_upstream.url}hits").json()["count"] == before


def test_password_without_second_factor_never_reaches_the_upstream(browser_for, worker, echo,
                                                                    echo_upstream):
    from tests.conftest import https_client, sign_in

    half = https_client()
    sign_in(half, worker, with_mfa=False)
    before = browser_for().get(f"{echo_upstream.url}hits").json()["count"]
    response = browser_for(sessionid=half.cookies["sessionid"].value).get("/apps/echo/")
    assert response.status_code == 302
    assert response.headers["location"].startswith("/accounts/mfa/verify/")
    assert browser_for().get(f"{echo_upstream.url}hits").json()["count"] == before


def test_two_requests_carry_two_different_assertions(browser_for, worker, echo):
    client = browser_for(worker)
    first = _seen(client.get("/apps/echo/"))["header_map"]["x-portal-assertion"][0]
    second = _seen(client.get("/apps/echo/"))["header_map"]["x-portal-assertion"][0]
    assert first != second
    assert (jwt.decode(first, options={"verify_signature": False})["jti"]
            != jwt.decode(second, options={"verify_signature": False})["jti"])


def test_a_tampered_assertion_does_not_verify(browser_for, worker, echo):
    token = _seen(browser_for(worker).get("/apps/echo/"))["header_map"]["x-portal-assertion"][0]
    jwks = browser_for().get("/.well-known/jwks.json").json()
    head, body, sig = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(body.encode()))
    claims["sub"] = "1"
    forged_body = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    with pytest.raises(InvalidSignature):
        _verify_with_cryptography_only(f"{head}.{forged_body}.{sig}", jwks["keys"][0])
