"""DKIM keys: making them, the record that publishes them, and sealing the private half.

A private key is sealed before it is stored. With ``MAILPROV_DKIM_KEY_SECRET`` it
is encrypted with AES-256-GCM under a key derived from the secret (HKDF-SHA256),
the domain and selector bound in as associated data, so a database dump alone
discloses nothing and a row copied onto another domain does not decrypt.
Without the secret it is stored as ``plain:`` and a dump discloses it: that is
the trade-off of not having one more secret to keep (docs/deploy.md).

The service itself never decrypts: it only seals new keys. ``mailprov dkim
sync`` on the mail host opens them and writes the files rspamd reads.
"""

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from app.clock import utcnow

ALGORITHMS = ("rsa", "ed25519")
RSA_BITS = (2048, 3072, 4096)
SEALED = "aesgcm"
PLAIN = "plain"
_HKDF_INFO = b"mailprov dkim private key v1"
_NONCE_BYTES = 12


class KeyUnavailable(RuntimeError):
    """A stored private key cannot be opened with the secrets at hand."""


@dataclass(frozen=True)
class NewKey:
    algorithm: str
    bits: int
    public_key: str  # the p= value
    private_pem: bytes  # what rspamd reads (RSA: PKCS#8 PEM; Ed25519: base64 of the seed)


def generate(algorithm: str, bits: int) -> NewKey:
    """A new key pair. RSA: e=65537 and ``bits``; Ed25519 (RFC 8463): 256 bits."""
    if algorithm == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        raw_public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        seed = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        # rspamd reads an Ed25519 key file as the base64 of its 32-byte seed (no PEM).
        return NewKey("ed25519", 256, _b64(raw_public), base64.b64encode(seed))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return NewKey("rsa", bits, _b64(der), pem)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def txt_value(algorithm: str, public_key: str) -> str:
    """The TXT record's text (RFC 6376 3.6.1; k=ed25519 per RFC 8463)."""
    return f"v=DKIM1; k={algorithm}; p={public_key}"


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}."


def new_selector() -> str:
    """``mp`` + today's date + 4 random hex digits, e.g. ``mp20261201-3fa9``: sorts by
    age, says who made it, and never repeats within a domain in practice."""
    return f"mp{utcnow():%Y%m%d}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- sealing


def _derive(secret: SecretStr) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret.get_secret_value().encode("utf-8")
    )


def key_id(secret: SecretStr) -> str:
    """A short, non-secret name of the derived key: says which secret sealed a row."""
    return hashlib.sha256(b"mailprov key id" + _derive(secret)).hexdigest()[:8]


def _associated(domain: str, selector: str) -> bytes:
    return f"{domain}\0{selector}".encode()


def seal(private: bytes, domain: str, selector: str, secret: SecretStr | None) -> str:
    """What the database stores for a private key."""
    if secret is None:
        return f"{PLAIN}:{_b64(private)}"
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_derive(secret)).encrypt(nonce, private, _associated(domain, selector))
    return f"{SEALED}:{key_id(secret)}:{_b64(nonce + sealed)}"


def is_sealed_with(stored: str, secret: SecretStr | None) -> bool:
    """Encrypted with this secret (``None``: stored in clear)."""
    if secret is None:
        return stored.startswith(PLAIN + ":")
    return stored.startswith(f"{SEALED}:{key_id(secret)}:")


def unseal(stored: str, domain: str, selector: str, secrets_: list[SecretStr]) -> bytes:
    """The private key; raises KeyUnavailable when none of ``secrets_`` opens it."""
    scheme, _, rest = stored.partition(":")
    if scheme == PLAIN:
        return base64.b64decode(rest)
    if scheme != SEALED:
        raise KeyUnavailable(f"{selector}._domainkey.{domain}: unknown storage scheme")
    wanted, _, payload = rest.partition(":")
    for secret in secrets_:
        if key_id(secret) != wanted:
            continue
        blob = base64.b64decode(payload)
        try:
            return AESGCM(_derive(secret)).decrypt(
                blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _associated(domain, selector)
            )
        except InvalidTag:
            break
    raise KeyUnavailable(
        f"{selector}._domainkey.{domain}: sealed with a secret (key id {wanted}) that "
        "MAILPROV_DKIM_KEY_SECRET / _PREVIOUS do not hold, or the row was altered"
    )
