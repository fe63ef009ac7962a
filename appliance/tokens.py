"""API bearer tokens: creation, revocation and constant-time verification.

A token is ``ww_<id>_<secret>``: the id finds the stored record and the secret is 32
random bytes. The configuration file keeps only the SHA-256 digest of the whole token
under ``[[api.tokens]]``, so reading the file does not reveal a usable token. A plain
digest (no key stretching) is enough because the secret has 256 bits of entropy.
Tokens never reach a log: functions here log token ids only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path

from appliance.config import TOKEN_SCOPES, ConfigError, TokenRecord, parse_config, write_config

log = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"ww_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
#: Compared against when no record has the presented id, so a miss costs the same time.
_DUMMY_DIGEST = hashlib.sha256(b"wirewatch-no-such-token").hexdigest()


def hash_token(token: str) -> str:
    """Return the hex SHA-256 digest stored for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    """Parse a comma-separated scope list such as ``read,jobs``; raises ValueError."""
    scopes = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [scope for scope in scopes if scope not in TOKEN_SCOPES]
    if not scopes or unknown:
        raise ValueError(f"invalid scopes {text!r}; expected a comma-separated list of "
                         f"{', '.join(TOKEN_SCOPES)}")
    return scopes


def new_token(scopes: Iterable[str], label: str = "") -> tuple[TokenRecord, str]:
    """Make a token; return its stored record and the token text (shown to the user once)."""
    token_id = secrets.token_hex(8)
    token = f"ww_{token_id}_{secrets.token_urlsafe(32)}"
    record = TokenRecord(id=token_id, sha256=hash_token(token), scopes=tuple(scopes),
                         created=round(time.time(), 3), label=label)
    return record, token


def create_token(config_path: str | Path, scopes: Iterable[str],
                 label: str = "") -> tuple[TokenRecord, str]:
    """Add a new token to the configuration file; return its record and the token text."""
    document = _load_document(config_path)
    record, token = new_token(scopes, label)
    api = document.setdefault("api", {})
    api["tokens"] = [*api.get("tokens", []), record.to_dict()]
    _write_validated(document, config_path)
    log.info("token %s created with scopes %s in %s", record.id, ",".join(record.scopes),
             config_path)
    return record, token


def revoke_token(config_path: str | Path, token_id: str) -> bool:
    """Remove the token ``token_id`` from the configuration file; return False when absent."""
    document = _load_document(config_path)
    api = document.get("api", {})
    tokens = api.get("tokens", [])
    kept = [item for item in tokens if item.get("id") != token_id]
    if len(kept) == len(tokens):
        return False
    api["tokens"] = kept
    _write_validated(document, config_path)
    log.info("token %s revoked in %s", token_id, config_path)
    return True


def verify_token(tokens: Iterable[TokenRecord], presented: str) -> TokenRecord | None:
    """Return the record matching ``presented``, or None; the digests are compared in constant time.

    A malformed token or an unknown id still costs one digest comparison, so response
    times do not tell an attacker which ids exist.
    """
    match = TOKEN_PATTERN.fullmatch(presented)
    wanted = match.group(1) if match else None
    record = next((item for item in tokens if item.id == wanted), None)
    digest = hash_token(presented)
    expected = record.sha256 if record is not None else _DUMMY_DIGEST
    if hmac.compare_digest(digest, expected) and record is not None:
        return record
    return None


def grants(record: TokenRecord, scope: str) -> bool:
    """Tell whether a token allows an operation that needs ``scope``; admin allows all."""
    return scope in record.scopes or "admin" in record.scopes


def _load_document(config_path: str | Path) -> dict:
    path = Path(config_path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError("config", str(path), "file not found; create it with 'wirewatch "
                          "config init --data-dir DIR > PATH'") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", str(path), f"invalid TOML ({error})") from error


def _write_validated(document: dict, config_path: str | Path) -> None:
    """Validate the whole document before replacing the file, so a bad edit changes nothing."""
    path = Path(config_path).resolve()
    parse_config(document, path)
    write_config(document, path)
