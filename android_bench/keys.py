"""The adb RSA key pair the harness authenticates with.

A phone that already trusts this computer trusts ``~/.android/adbkey`` (the key the ``adb`` tool
made), so that key is reused when present. Otherwise a new 2048-bit pair is created there with
0600 permissions, exactly where ``adb`` would put it. ``--adb-key PATH`` picks another private key;
its public half is ``PATH.pub`` (recreated from the private key when missing).
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from emobench_common.errors import EmobenchError

if TYPE_CHECKING:
    from adb_shell.auth.sign_cryptography import CryptographySigner

log = logging.getLogger(__name__)


class AdbKeyError(EmobenchError):
    """The adb key cannot be read or created."""


def default_key_path() -> Path:
    """``$ANDROID_SDK_HOME/.android/adbkey`` or ``~/.android/adbkey``, where the adb tool keeps it."""
    base = os.environ.get("ANDROID_USER_HOME")
    if base:
        return Path(base) / "adbkey"
    home = os.environ.get("ANDROID_SDK_HOME") or os.path.expanduser("~")
    return Path(home) / ".android" / "adbkey"


def _warn_if_loose(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("adb private key %s is readable by other users (mode %o); run: chmod 600 %s",
                    path, mode, path)


def _write_private_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def public_key_text(private_key_path: Path) -> str:
    """The adb-format public key (base64 of Android's RSAPublicKey struct + `` user@host``)."""
    from adb_shell.auth.keygen import encode_pubkey, get_user_info

    return base64.b64encode(encode_pubkey(str(private_key_path))).decode() + get_user_info()


def ensure_adb_key(path: Path | None = None, *, create: bool | None = None) -> Path:
    """Return a usable private key path, creating the pair (0600) when it does not exist.

    Args:
        path: a private key; ``None`` means the adb tool's default ``~/.android/adbkey``.
        create: create a missing key; by default only the default key is created (a missing
            ``--adb-key`` file is an error: it is most likely a typo).

    Raises:
        AdbKeyError: the file exists but is not a PEM RSA private key, or cannot be created.
    """
    if create is None:
        create = path is None
    path = Path(path) if path is not None else default_key_path()
    if not path.exists():
        if not create:
            raise AdbKeyError(f"adb key {path} does not exist",
                              hint="pass the private key file (not the .pub), or omit --adb-key")
        try:
            _write_private_key(path)
        except OSError as exc:
            raise AdbKeyError(f"cannot create adb key {path}: {exc}",
                              hint="check the folder's permissions or pass --adb-key PATH") from exc
        log.info("created a new adb key pair at %s (a phone must accept it once)", path)
    _warn_if_loose(path)
    pub = Path(str(path) + ".pub")
    try:
        if not pub.exists():
            text = public_key_text(path)
            fd = os.open(pub, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
    except (ValueError, TypeError) as exc:
        raise AdbKeyError(f"{path} is not a PEM RSA private key: {exc}",
                          hint="point --adb-key at the adbkey file the adb tool created") from exc
    return path


def load_signer(path: Path | None = None) -> CryptographySigner:
    """An adb-shell signer for the key at ``path`` (see :func:`ensure_adb_key`)."""
    from adb_shell.auth.sign_cryptography import CryptographySigner

    key_path = ensure_adb_key(path)
    try:
        return CryptographySigner(str(key_path))
    except (ValueError, TypeError) as exc:
        raise AdbKeyError(f"{key_path} is not a PEM RSA private key: {exc}",
                          hint="point --adb-key at the adbkey file the adb tool created") from exc
