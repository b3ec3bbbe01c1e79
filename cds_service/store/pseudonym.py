"""Pseudonymous patient keys: HMAC-SHA256 of the patient id with a secret, never the id itself.

The key lets an analyst count distinct patients or follow one patient's cards over time without the
store ever holding an identifier. The secret comes from ``CDS_PATIENT_KEY_SECRET``; without it one is
generated on first start and kept in ``CDS_DATA_DIR/patient-key.secret`` (mode 0600). Several instances
must share the secret (set the variable), or the same patient gets a different key on each of them.
Keep the secret out of the database: with it, ids could be guessed and checked against the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "patient-key.secret"


def patient_key(secret: bytes, patient_id: str | None) -> str | None:
    if not patient_id:
        return None
    return hmac.new(secret, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    if configured:
        return configured.encode("utf-8")
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        _create(path)
    if path.stat().st_mode & 0o077:  # someone loosened it; a secret readable by others is no secret
        os.chmod(path, 0o600)
    value = path.read_text(encoding="ascii").strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} holds no usable secret; delete it to generate a new one")
    return value.encode("ascii")


def _create(path: Path) -> None:
    """Write the secret atomically: concurrent workers starting together all end up with the same one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process won the race: then its secret is the one
        except FileExistsError:
            pass
        except OSError:  # filesystems without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
