import time
import warnings
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.requests import Request

from server.app import create_app
from server.auth import DEV_SECRET, Authenticator, AuthError, InsecureSecret, issue_token
from server.settings import AuthSettings, ServerSettings, Settings, load
from tests.support.asgi import request_with

SECRET = "s" * 40


def bearer(token: str) -> Request:
    return request_with(authorization=f"Bearer {token}")


@pytest.fixture()
def hs() -> Authenticator:
    return Authenticator(AuthSettings(jwt_secret=SECRET, api_keys={"key-one": "alice", "key-two": "bob"}))


def test_valid_token_names_the_user(hs):
    principal = hs.authenticate(bearer(issue_token(AuthSettings(jwt_secret=SECRET), "u1", email="u1@x.io")))
    assert principal.user_id == "u1" and principal.email == "u1@x.io"


def test_token_without_exp_is_refused(hs):
    token = jwt.encode({"sub": "u1"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as caught:
        hs.authenticate(bearer(token))
    assert caught.value.code == "invalid-token"


def test_expired_token_is_refused(hs):
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as caught:
        hs.authenticate(bearer(token))
    assert caught.value.code == "token-expired"


def test_alg_none_is_refused(hs):
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        hs.authenticate(bearer(token))


def test_token_signed_with_another_key_is_refused(hs):
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    with pytest.raises(AuthError):
        hs.authenticate(bearer(token))


def test_algorithm_comes_from_config_not_token(hs):
    # HS512 is a valid HMAC algorithm, but only HS256 is configured. Signed with the configured
    # secret, which PyJWT warns is short for SHA-512: that is the forgery.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512")
    with pytest.raises(AuthError):
        hs.authenticate(bearer(token))


def test_audience_and_issuer_are_checked_when_configured():
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, jwt_audience="avatars", jwt_issuer="idp"))
    good = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "aud": "avatars", "iss": "idp"}, SECRET)
    assert auth.authenticate(bearer(good)).user_id == "u"
    wrong_aud = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "aud": "other", "iss": "idp"}, SECRET)
    with pytest.raises(AuthError):
        auth.authenticate(bearer(wrong_aud))


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_algorithms(algorithm):
    private = rsa.generate_private_key(65537, 2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = Authenticator(AuthSettings(jwt_algorithms=(algorithm,), jwt_public_key=pem))
    token = jwt.encode({"sub": "u9", "exp": int(time.time()) + 60}, private, algorithm=algorithm)
    assert auth.authenticate(bearer(token)).user_id == "u9"
    # The classic confusion attack: an HMAC token keyed with the public key text.
    forged = jwt.encode({"sub": "u9", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
    with pytest.raises(AuthError):
        auth.authenticate(bearer(forged))


def test_api_key_maps_to_its_user(hs):
    assert hs.authenticate(request_with(x_api_key="key-two")).user_id == "bob"
    with pytest.raises(AuthError) as caught:
        hs.authenticate(request_with(x_api_key="key-thre"))
    assert caught.value.code == "invalid-api-key"


def test_no_credentials_and_malformed_header(hs):
    with pytest.raises(AuthError):
        hs.authenticate(request_with())
    with pytest.raises(AuthError) as caught:
        hs.authenticate(request_with(authorization="Basic dXNlcjpwYXNz"))
    assert caught.value.code == "invalid-authorization"


def test_none_algorithm_cannot_be_configured():
    with pytest.raises(ValueError):
        Authenticator(AuthSettings(jwt_secret=SECRET, jwt_algorithms=("none",)))


def test_a_request_is_verified_once_and_a_failure_is_not_remembered(hs):
    request = bearer(issue_token(AuthSettings(jwt_secret=SECRET), "u1"))
    first = hs.authenticate(request)
    hs._verify_key = "rotated" + "x" * 40  # a second verification would now fail
    assert hs.authenticate(request) is first
    refused = request_with(authorization="Bearer nonsense")
    for _ in range(2):
        with pytest.raises(AuthError):
            hs.authenticate(refused)


# -- the secret, checked when the app is made -------------------------------------------------


@pytest.mark.parametrize(
    ("algorithms", "secret"),
    [(("HS256",), "s" * 31), (("HS384",), "s" * 47), (("HS512",), "s" * 63), (("HS256",), "é" * 15)],
)
def test_an_hmac_secret_shorter_than_its_hash_refuses_to_start(algorithms, secret):
    settings = Settings(auth=AuthSettings(jwt_secret=secret, jwt_algorithms=algorithms))
    with pytest.raises(InsecureSecret, match="needs at least"):
        create_app(settings)


@pytest.mark.parametrize("secret", ["s" * 32, ""])
def test_a_long_enough_secret_or_none_at_all_starts(secret):
    create_app(Settings(auth=AuthSettings(jwt_secret=secret)))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "avatars.example"])
def test_the_example_secret_refuses_every_address_but_loopback(host):
    settings = Settings(server=ServerSettings(host=host), auth=AuthSettings(jwt_secret=DEV_SECRET))
    with pytest.raises(InsecureSecret, match=r"example auth\.jwt_secret"):
        create_app(settings)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_the_example_secret_is_fine_on_loopback(host):
    create_app(Settings(server=ServerSettings(host=host), auth=AuthSettings(jwt_secret=DEV_SECRET)))


def test_the_example_secret_is_the_one_config_yaml_ships():
    assert load(Path(__file__).resolve().parents[2] / "config.yaml", environ={}).auth.jwt_secret == DEV_SECRET


def test_a_verified_token_is_not_checked_again_until_it_expires(hs, monkeypatch):
    """The verified-token cache: one signature check per token until its `exp`, then a full check
    again (which refuses it once pyjwt's own clock agrees). jwt.decode is counted by a spy (the
    real one still runs) and the cache's clock moved past `exp`: a real expiry would be a wait."""
    token = issue_token(AuthSettings(jwt_secret=SECRET), "u1", ttl=60)
    calls = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    for _ in range(3):
        assert hs.authenticate(bearer(token)).user_id == "u1"
    assert len(calls) == 1
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    hs.authenticate(bearer(token))
    assert len(calls) == 2


def test_a_token_refused_once_is_refused_again(hs):
    token = issue_token(AuthSettings(jwt_secret="t" * 40), "u1")  # signed with another key
    for _ in range(2):
        with pytest.raises(AuthError) as caught:
            hs.authenticate(bearer(token))
        assert caught.value.code == "invalid-token"
