"""The CLI's account: one key in the user's config directory, and what it published.

$XDG_CONFIG_HOME/c2d (default ~/.config/c2d) holds ``account.key`` (hex,
mode 0600) and ``published.json``: the files checksum of each algorithm this
account published, which a dataset's ``--trust DID`` needs (it is sealed in the
algorithm's DDO, so nobody else can read it back).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from c2d_sdk import Signer
from plumbing import untrusted


class NoAccount(Exception):
    """No key in the config directory yet."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "c2d"


def key_file() -> Path:
    return config_dir() / "account.key"


def load() -> Signer:
    path = key_file()
    if not path.exists():
        raise NoAccount(f"no account yet ({path} does not exist): run `c2d account new` or `c2d account import`")
    return Signer(path.read_text().strip())


def save(signer: Signer) -> Path:
    """Writes the account's key (mode 0600), replacing any other."""
    path = key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".new")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(signer.private_key + "\n")
    partial.replace(path)
    return path


def load_or_create() -> Signer:
    try:
        return load()
    except NoAccount:
        signer = Signer.generate()
        save(signer)
        return signer


def _published_file() -> Path:
    return config_dir() / "published.json"


def files_checksums() -> dict[str, str]:
    """DID -> files checksum of the algorithms this account published."""
    try:
        return dict(untrusted.parse_json(_published_file().read_text(), str(_published_file())))
    except (OSError, ValueError):
        return {}


def remember_files_checksum(did: str, checksum: str) -> None:
    known = files_checksums()
    known[did] = checksum
    _published_file().parent.mkdir(parents=True, exist_ok=True)
    _published_file().write_text(json.dumps(known, indent=1, sort_keys=True))
