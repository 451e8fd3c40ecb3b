"""Passwords and random tokens.

Passwords are hashed with scrypt (memory-hard, in the standard library), each
with its own salt. API keys and session tokens are 256 random bits, so a plain
sha256 of them is enough to keep a database dump from being usable, and lets
them be looked up by their hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt's cost: 2**14 × 8 × 128 bytes = 16 MiB and ~50 ms per check (OWASP's minimum).
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
API_KEY_PREFIX = "cbk_"  # "chatbot key": makes leaked keys easy to grep for and to tell apart


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(_scrypt(password, salt, _N, _R, _P))}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        return hmac.compare_digest(_scrypt(password, _unb64(salt), int(n), int(r), int(p)), _unb64(digest))
    except (ValueError, TypeError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + new_token()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_password() -> str:
    """For the admin command when no password is given: 20 easy-to-type characters."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(20))
