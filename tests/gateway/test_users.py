"""Users on the secured front (auth on, PostgreSQL): API keys, browser
sign-in, and one user's data invisible to another."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from scripts.stack import REPO


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def alice(secured):
    return secured.new_user("alice")


@pytest.fixture(scope="module")
def bob(secured):
    return secured.new_user("bob")


@pytest.mark.parametrize("method, path", [("GET", "/api/conversations"), ("POST", "/api/chat"),
                                          ("POST", "/api/transcribe"), ("GET", "/v1/models"),
                                          ("GET", "/api/keys"), ("GET", "/api/auth/me")])
def test_everything_but_health_needs_credentials(secured, method, path):
    response = httpx.request(method, secured.url + path, timeout=30)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(secured.url + "/healthz").status_code == 200


def test_a_wrong_or_revoked_key_is_401(secured, alice):
    assert httpx.get(secured.url + "/api/conversations", headers=bearer("cbk_" + "x" * 43)).status_code == 401
    _, key = alice
    created = httpx.post(secured.url + "/api/keys", json={"name": "laptop"}, headers=bearer(key)).json()
    assert created["key"].startswith("cbk_") and created["prefix"] == created["key"][:12]
    listed = httpx.get(secured.url + "/api/keys", headers=bearer(key)).json()
    assert created["id"] in [k["id"] for k in listed] and all("key" not in k for k in listed)
    assert httpx.get(secured.url + "/api/auth/me", headers=bearer(created["key"])).json()["username"] == "alice"

    assert httpx.delete(f"{secured.url}/api/keys/{created['id']}", headers=bearer(key)).status_code == 204
    assert httpx.get(secured.url + "/api/auth/me", headers=bearer(created["key"])).status_code == 401


def test_the_openai_sdk_authenticates_with_a_key(secured, alice):
    from openai import AuthenticationError, OpenAI

    _, key = alice
    models = OpenAI(base_url=secured.url + "/v1", api_key=key).models.list()
    assert any(m.id for m in models.data)
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=secured.url + "/v1", api_key="cbk_wrong", max_retries=0).models.list()


def test_browser_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(secured, alice):
    password, _ = alice
    with httpx.Client(base_url=secured.url) as browser:
        wrong = browser.post("/api/auth/login", json={"username": "alice", "password": "not-it"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "wrong username or password"
        unknown = browser.post("/api/auth/login", json={"username": "nobody", "password": "not-it"})
        assert unknown.json() == wrong.json()  # the answer does not tell which names exist

        signed_in = browser.post("/api/auth/login", json={"username": "alice", "password": password})
        assert signed_in.status_code == 200 and signed_in.json()["username"] == "alice"
        cookie = signed_in.headers["set-cookie"].lower()
        assert "chatbot_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/api/auth/me").json()["username"] == "alice"
        assert browser.get("/api/conversations").status_code == 200

        session = browser.cookies["chatbot_session"]
        assert browser.post("/api/auth/logout").status_code == 204
        # The old cookie, replayed, is refused: the session is gone from the database.
        assert httpx.get(secured.url + "/api/auth/me", cookies={"chatbot_session": session}).status_code == 401


def test_a_user_sees_only_their_own_conversations(secured, alice, bob):
    (_, alice_key), (_, bob_key) = alice, bob
    mine = httpx.post(secured.url + "/api/conversations", json={"title": "privado"}, headers=bearer(alice_key))
    conversation = mine.json()["id"]
    theirs = bearer(bob_key)
    for method, body in (("GET", None), ("PATCH", {"title": "mío"}), ("DELETE", None)):
        response = httpx.request(method, f"{secured.url}/api/conversations/{conversation}", json=body,
                                 headers=theirs)
        assert response.status_code == 404, (method, response.text)
    chat = httpx.post(secured.url + "/api/chat", data={"message": "hola", "conversation_id": conversation},
                      headers=theirs, timeout=60)
    assert chat.status_code == 404
    listed = httpx.get(secured.url + "/api/conversations", headers=theirs).json()["conversations"]
    assert conversation not in [c["id"] for c in listed]
    # Still there, untouched, for its owner.
    assert httpx.get(f"{secured.url}/api/conversations/{conversation}",
                     headers=bearer(alice_key)).json()["title"] == "privado"


def test_the_admin_command_refuses_a_duplicate_user(secured, alice):
    again = secured.admin("create-user", "alice")
    assert again.returncode == 1 and "exists already" in again.stderr


def test_single_user_mode_is_refused_unless_the_gateway_listens_on_loopback(tmp_path):
    env = {"GATEWAY_AUTH": "off", "GATEWAY_HOST": "0.0.0.0", "GATEWAY_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"}
    done = subprocess.run([str(REPO / ".venv" / "gateway" / "bin" / "python"), "-m", "gateway"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "GATEWAY_AUTH=off" in done.stderr and "loopback" in done.stderr
    assert not (tmp_path / "gateway.db").exists()  # refused before touching anything


def test_keys_and_passwords_are_stored_only_as_hashes(secured, postgres_url):
    import hashlib

    password, key = secured.new_user("dora")
    rows = subprocess.run(["psql", postgres_url, "-Atc", "SELECT u.password_hash, k.key_hash FROM users u "
                           "JOIN api_keys k ON k.user_id = u.id WHERE u.username = 'dora'"],
                          capture_output=True, text=True, check=True).stdout
    assert key not in rows and password not in rows
    assert hashlib.sha256(key.encode()).hexdigest() in rows and rows.startswith("scrypt$")


def test_a_new_password_ends_the_browser_sessions(secured):
    password, _ = secured.new_user("elena")
    with httpx.Client(base_url=secured.url) as first, httpx.Client(base_url=secured.url) as second:
        for browser in (first, second):
            assert browser.post("/api/auth/login", json={"username": "elena", "password": password}).status_code == 200
        changed = first.post("/api/auth/password", json={"current_password": password,
                                                         "new_password": "otra-clave-larga"})
        assert changed.status_code == 204
        assert second.get("/api/auth/me").status_code == 401
        assert first.post("/api/auth/password", json={"current_password": "wrong",
                                                      "new_password": "x" * 12}).status_code in (401, 403)
    again = httpx.post(secured.url + "/api/auth/login", json={"username": "elena", "password": "otra-clave-larga"})
    assert again.status_code == 200


def test_sign_in_attempts_beyond_the_limit_are_429_per_address(tmp_path):
    from tests.support.services import gateway_service

    env = {"GATEWAY_AUTH": "on", "LOGIN_ATTEMPTS_PER_MINUTE": "3"}
    with gateway_service(tmp_path, env) as (_, url):
        codes = [httpx.post(url + "/api/auth/login", json={"username": "x", "password": "guess"}).status_code
                 for _ in range(4)]
    assert codes[:3] == [401] * 3 and codes[3] == 429
