"""Encryption of direct patient identifiers and their keyed hash for look-ups.

One configured master key (32 random bytes, base64) is split with HKDF into an AES-GCM key for
the identifiers and an HMAC key for the look-up hash, so a leaked database holds neither names,
CPR numbers nor a hash that can be brute-forced over the small CPR space without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lims.errors import ConfigurationError

KEY_FILE = "patient_key"


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class IdentityVault:
    def __init__(self, master_key_b64: str) -> None:
        try:
            master = base64.b64decode(master_key_b64, validate=True)
        except ValueError:
            raise ConfigurationError("security.patient_key is not valid base64") from None
        if len(master) < 32:
            raise ConfigurationError("security.patient_key must hold at least 32 random bytes")
        self._aead = AESGCM(_derive(master, b"lims patient identifiers v1"))
        self._hmac_key = _derive(master, b"lims patient lookup v1")

    def encrypt(self, plaintext: str, *, field: str) -> str:
        nonce = os.urandom(12)
        # The field name is authenticated data: a CPR ciphertext cannot pass as a name.
        sealed = self._aead.encrypt(nonce, plaintext.encode(), field.encode())
        return base64.b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, *, field: str) -> str:
        raw = base64.b64decode(token)
        return self._aead.decrypt(raw[:12], raw[12:], field.encode()).decode()

    def lookup_hash(self, identifier: str) -> str:
        return hmac.new(self._hmac_key, identifier.encode(), hashlib.sha256).hexdigest()


def resolve_patient_key(configured: str, instance_path: Path) -> str:
    """The configured key, or (for a development install) one generated in the instance folder."""
    if configured:
        return configured
    key_file = instance_path / KEY_FILE
    if key_file.exists():
        return key_file.read_text().strip()
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
