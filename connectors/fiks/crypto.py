"""Hybrid encryption and signatures of Fiks IO-style messages (docs/vendor-formats.md).

Content: AES-256-GCM under a fresh key and a fresh 12-byte IV per message, no associated data;
the key is wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256, no label) for the recipient's public
key. Signature: RSA-PSS (SHA-256, MGF1-SHA-256, salt length 32) with the sender's private key
over the UTF-8 bytes of `meldingId|meldingType|innhold`, `innhold` being the base64 text as
sent. Every check raises (`SignatureInvalid`, `DecryptionFailed`); none returns False.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors.fiks.errors import DecryptionFailed, KeyInvalid, SignatureInvalid

__all__ = [
    "IV_BYTES",
    "KEY_BITS",
    "Sealed",
    "b64decode",
    "decrypt",
    "encrypt",
    "generate_private_key",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "sign",
    "signing_input",
    "verify",
]

KEY_BITS = 2048
"""Size of generated RSA keys, and the smallest size accepted."""
IV_BYTES = 12
_CONTENT_KEY_BITS = 256
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
# salt length = digest length: what Java's PSSParameterSpec and most HSMs use with SHA-256
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@dataclass(frozen=True, slots=True)
class Sealed:
    """The encrypted part of an envelope, each field base64 as in the JSON."""

    nokkel: str
    iv: str
    innhold: str


def b64decode(text: str, *, field: str) -> bytes:
    """Decode strict base64 or raise ValueError naming the field."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{field} is not valid base64") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def generate_private_key(bits: int = KEY_BITS) -> rsa.RSAPrivateKey:
    """Generate a new RSA key pair (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_to_pem(key: rsa.RSAPrivateKey) -> str:
    """Return the private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_to_pem(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    """Return the public key (of a key pair or itself) as SubjectPublicKeyInfo PEM."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_private_key(pem: str | bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load an RSA private key from PEM or raise KeyInvalid."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise KeyInvalid(f"not a readable PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyInvalid(f"expected an RSA private key, got {type(key).__name__}")
    _check_size(key.key_size)
    return key


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from SubjectPublicKeyInfo PEM or raise KeyInvalid."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise KeyInvalid(f"not a readable PEM public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyInvalid(f"expected an RSA public key, got {type(key).__name__}")
    _check_size(key.key_size)
    return key


def load_or_create_private_key(path: Path, bits: int = KEY_BITS) -> rsa.RSAPrivateKey:
    """Load the PEM key at `path`, or generate one and write it there (mode 0600)."""
    if path.exists():
        return load_private_key(path.read_bytes())
    key = generate_private_key(bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(private_key_to_pem(key))
    return key


def _check_size(bits: int) -> None:
    if bits < KEY_BITS:
        raise KeyInvalid(f"RSA keys must have at least {KEY_BITS} bits, got {bits}")


def encrypt(plaintext: bytes, recipient: rsa.RSAPublicKey) -> Sealed:
    """Encrypt under a fresh AES-256-GCM key wrapped for `recipient`."""
    content_key = AESGCM.generate_key(bit_length=_CONTENT_KEY_BITS)
    iv = os.urandom(IV_BYTES)
    ciphertext = AESGCM(content_key).encrypt(iv, plaintext, None)
    return Sealed(
        nokkel=_b64(recipient.encrypt(content_key, _OAEP)), iv=_b64(iv), innhold=_b64(ciphertext)
    )


def decrypt(sealed: Sealed, private_key: rsa.RSAPrivateKey) -> bytes:
    """Unwrap the content key and decrypt, or raise DecryptionFailed."""
    try:
        wrapped = b64decode(sealed.nokkel, field="nokkel")
        iv = b64decode(sealed.iv, field="iv")
        ciphertext = b64decode(sealed.innhold, field="innhold")
    except ValueError as exc:
        raise DecryptionFailed(str(exc)) from exc
    if len(iv) != IV_BYTES:
        raise DecryptionFailed(f"iv must be {IV_BYTES} bytes, got {len(iv)}")
    try:
        content_key = private_key.decrypt(wrapped, _OAEP)
    except ValueError as exc:
        raise DecryptionFailed(
            "cannot unwrap the content key: encrypted for another key or damaged"
        ) from exc
    if len(content_key) * 8 != _CONTENT_KEY_BITS:
        raise DecryptionFailed(f"content key must be {_CONTENT_KEY_BITS} bits")
    try:
        return AESGCM(content_key).decrypt(iv, ciphertext, None)
    except InvalidTag as exc:
        raise DecryptionFailed("ciphertext fails the AES-GCM tag check: it was changed") from exc


def signing_input(melding_id: str, melding_type: str, innhold: str) -> bytes:
    """Return the bytes that are signed: `meldingId|meldingType|innhold` in UTF-8."""
    return f"{melding_id}|{melding_type}|{innhold}".encode()


def sign(melding_id: str, melding_type: str, innhold: str, private_key: rsa.RSAPrivateKey) -> str:
    """Sign the message fields and return the base64 signature."""
    signature = private_key.sign(
        signing_input(melding_id, melding_type, innhold), _PSS, hashes.SHA256()
    )
    return _b64(signature)


def verify(
    melding_id: str,
    melding_type: str,
    innhold: str,
    signature: str,
    public_key: rsa.RSAPublicKey,
) -> None:
    """Check the signature with the sender's public key, or raise SignatureInvalid."""
    try:
        raw = b64decode(signature, field="signatur")
    except ValueError as exc:
        raise SignatureInvalid(str(exc)) from exc
    try:
        public_key.verify(
            raw, signing_input(melding_id, melding_type, innhold), _PSS, hashes.SHA256()
        )
    except InvalidSignature as exc:
        raise SignatureInvalid(
            f"signature of message {melding_id} does not match the sender's key"
        ) from exc
