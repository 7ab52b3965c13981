"""RSA authentication of the virtual device, as a phone does it with ``/data/misc/adb/adb_keys``.

The daemon sends a 20-byte token; the host signs it with its adb key (PKCS#1 v1.5 over a SHA-1
"prehashed" token) or offers its public key. Keys are in adb's format: the base64 of Android's
``RSAPublicKey`` struct, optionally followed by `` user@host``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emobench_common.errors import EmobenchError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


def parse_adb_public_key(text: str) -> RSAPublicKey:
    """An RSA public key from the adb format (base64 of Android's RSAPublicKey struct [+ ' user@host'])."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    blob = base64.b64decode(text.strip().split()[0])
    (words,) = struct.unpack_from("<I", blob, 0)
    if words * 8 + 12 != len(blob):
        raise ValueError("not an adb RSA public key")
    n = int.from_bytes(blob[8:8 + 4 * words], "little")
    (e,) = struct.unpack_from("<I", blob, 8 + 8 * words)
    return RSAPublicNumbers(e, n).public_key()


def load_authorized_keys(path: Path) -> list[RSAPublicKey]:
    """Keys from an ``adb_keys``-style file (one adb public key per line; '#' comments)."""
    keys = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(parse_adb_public_key(line))
        except (ValueError, struct.error, binascii.Error) as exc:
            raise EmobenchError(f"{path}:{lineno}: not an adb public key ({exc})",
                                hint="each line must be the content of an adbkey.pub file") from None
    return keys


def verify_signature(keys: Sequence[RSAPublicKey], token: bytes, signature: bytes) -> bool:
    """Whether one of ``keys`` signed ``token`` (adb's AUTH_SIGNATURE)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    for key in keys:
        try:
            key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
            return True
        except (InvalidSignature, ValueError):
            continue
    return False
