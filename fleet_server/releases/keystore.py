"""The server's signing keys: root key(s), the current release key and its certificate, revocation list.

Layout under ``Settings.keys_dir`` (default ``<data_dir>/keys``), all written atomically:

* ``root-<key_id>.key`` / ``release-<key_id>.key``: PEM PKCS#8, mode 0600, encrypted with
  ``Settings.key_passphrase`` when one is set (``ota.keys.save_private_key``);
* ``root-<key_id>.pub``: PEM SubjectPublicKeyInfo (what a device is provisioned with, OpenSSL-readable);
* ``release-<key_id>.cert.json``: the root-signed certificate that travels in every manifest;
* ``revocation.json``: the newest root-signed revocation list (wire bytes, served to devices as is);
* ``keys.json``: the index (public parts and dates only; no secret is ever in it).

Mutations (generate, rotate, revoke) take an exclusive ``flock`` on ``.lock`` so two server processes
sharing the directory never interleave; readers see either the old or the new index (atomic rename).
The root key sits on the server here because it certifies rotations and signs revocation lists; where
that is not acceptable, keep the passphrase out of the server's environment between such operations.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleet_server.releases.errors import Conflict, KeystoreError, NoSigningKeys, NotFound
from fleet_server.settings import Settings
from ota import keys
from ota.certificates import certify_key
from ota.errors import KeyFileError
from ota.fields import format_timestamp
from ota.release import ReleaseSigner
from ota.revocation import build_revocation_list

INDEX_FILE = "keys.json"
REVOCATION_FILE = "revocation.json"
_INDEX_VERSION = 1
# A certificate starts a little in the past: a device whose clock runs slightly behind still accepts it.
_CERT_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class RootKeyRecord:
    key_id: str
    public_key: str  # raw 32 bytes, hex
    created_at: str


@dataclass(frozen=True)
class ReleaseKeyRecord:
    key_id: str
    public_key: str
    created_at: str
    not_after: str  # end of the certificate's validity
    revoked_at: str | None = None


@dataclass(frozen=True)
class Revocation:
    serial: int
    issued_at: str
    revoked_key_ids: tuple[str, ...]


@dataclass(frozen=True)
class KeyListing:
    """Everything public about the key set (what ``GET /api/v1/keys`` shows)."""

    root_keys: tuple[RootKeyRecord, ...]
    release_keys: tuple[ReleaseKeyRecord, ...]
    current_release_key_id: str | None
    revocation: Revocation | None


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Keystore:
    """File-backed key set of one server (or of several sharing ``keys_dir``)."""

    def __init__(self, settings: Settings) -> None:
        self.directory = Path(settings.keys_dir or settings.data_dir / "keys")
        secret = settings.key_passphrase
        phrase = secret.get_secret_value() if secret is not None else ""
        self._passphrase = phrase.encode() if phrase else None
        self._valid_for = timedelta(days=settings.release_key_valid_days)

    # -- reading ---------------------------------------------------------------------------------------

    def _index(self) -> dict[str, Any] | None:
        path = self.directory / INDEX_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"key index {path} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != _INDEX_VERSION:
            raise KeystoreError(f"key index {path} has an unknown format")
        return data

    def _require_index(self) -> dict[str, Any]:
        index = self._index()
        if index is None or not index.get("roots"):
            raise NoSigningKeys(
                "no signing keys yet: run `tinyfleet keys generate` (POST /api/v1/keys/generate)"
            )
        return index

    def exists(self) -> bool:
        index = self._index()
        return bool(index and index.get("roots"))

    def listing(self) -> KeyListing:
        index = self._index() or {"roots": [], "release_keys": [], "current": None, "revocation": None}
        rev = index.get("revocation")
        return KeyListing(
            root_keys=tuple(RootKeyRecord(**r) for r in index["roots"]),
            release_keys=tuple(ReleaseKeyRecord(**r) for r in index["release_keys"]),
            current_release_key_id=index.get("current"),
            revocation=None
            if rev is None
            else Revocation(rev["serial"], rev["issued_at"], tuple(rev["revoked_key_ids"])),
        )

    def root_public_keys(self) -> list[bytes]:
        """Raw 32-byte root public keys: what an agent's trust configuration holds."""
        return [bytes.fromhex(r["public_key"]) for r in self._require_index()["roots"]]

    def revocation_list(self) -> bytes | None:
        """The newest root-signed revocation list, wire bytes (None before the first revocation)."""
        try:
            return (self.directory / REVOCATION_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def _load_private(self, name: str) -> keys.Ed25519PrivateKey:
        try:
            return keys.load_private_key(self.directory / name, self._passphrase)
        except KeyFileError as exc:
            # KeyFileError names the file and the cause; the passphrase is never part of it.
            raise KeystoreError(f"cannot load signing key: {exc.message}") from None

    def signer(self) -> ReleaseSigner:
        """The current release key with its certificate (raises NoSigningKeys before ``generate``)."""
        index = self._require_index()
        kid = index["current"]
        try:
            cert = json.loads((self.directory / f"release-{kid}.cert.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"certificate of release key {kid[:12]} is unreadable: {exc}") from None
        return ReleaseSigner(private_key=self._load_private(f"release-{kid}.key"), certificate=cert)

    # -- changing --------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        with (self.directory / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _save_index(self, index: dict[str, Any]) -> None:
        _write_atomic(self.directory / INDEX_FILE, json.dumps(index, indent=2, sort_keys=True).encode())

    def _new_release_key(self, root: keys.Ed25519PrivateKey) -> dict[str, Any]:
        release = keys.generate_private_key()
        kid = keys.key_id(release)
        start = _now() - _CERT_BACKDATE
        cert = certify_key(root, release, not_before=start, valid_for=self._valid_for)
        keys.save_private_key(release, self.directory / f"release-{kid}.key", self._passphrase)
        _write_atomic(self.directory / f"release-{kid}.cert.json", json.dumps(cert, indent=2).encode())
        return {
            "key_id": kid,
            "public_key": keys.raw_public_key(release).hex(),
            "created_at": format_timestamp(_now()),
            "not_after": cert["not_after"],
            "revoked_at": None,
        }

    def generate(self, *, new_trust_anchor: bool = False) -> KeyListing:
        """Create the root key and a first release key certified by it.

        Refuses when a root exists: a new root is a new trust anchor, and devices provisioned with the
        old one will refuse everything signed under the new one. ``new_trust_anchor=True`` moves the old
        key set to ``retired-<time>/`` and starts over.
        """
        with self._locked():
            if self.exists():
                if not new_trust_anchor:
                    raise Conflict(
                        "signing keys exist already; generating new ones replaces the devices' trust anchor "
                        "(pass new_trust_anchor / --new-trust-anchor to do that on purpose)"
                    )
                self._retire_all()
            root = keys.generate_private_key()
            root_id = keys.key_id(root)
            keys.save_private_key(root, self.directory / f"root-{root_id}.key", self._passphrase)
            keys.save_public_key(root, self.directory / f"root-{root_id}.pub")
            first = self._new_release_key(root)
            self._save_index(
                {
                    "version": _INDEX_VERSION,
                    "roots": [
                        {
                            "key_id": root_id,
                            "public_key": keys.raw_public_key(root).hex(),
                            "created_at": format_timestamp(_now()),
                        }
                    ],
                    "release_keys": [first],
                    "current": first["key_id"],
                    "revocation": None,
                }
            )
        return self.listing()

    def _retire_all(self) -> None:
        stamp = _now().strftime("%Y%m%dT%H%M%SZ")
        retired = Path(tempfile.mkdtemp(prefix=f"retired-{stamp}-", dir=self.directory))  # mode 0700
        for path in self.directory.iterdir():
            if path.is_file() and path.name != ".lock":
                shutil.move(str(path), retired / path.name)

    def _root_key(self, index: dict[str, Any]) -> keys.Ed25519PrivateKey:
        return self._load_private(f"root-{index['roots'][0]['key_id']}.key")

    def _newest_revocation(self, index: dict[str, Any]) -> dict[str, Any]:
        """The list file is written before the index: after a crash between the two the file is newer,
        and the next serial must follow it (a device refuses a different list under the same serial)."""
        newest = index.get("revocation") or {"serial": 0, "revoked_key_ids": []}
        data = self.revocation_list()
        if data is not None:
            try:
                on_disk = json.loads(data)
                if int(on_disk["serial"]) > int(newest["serial"]):
                    newest = {"serial": on_disk["serial"], "revoked_key_ids": on_disk["revoked_key_ids"]}
            except (ValueError, KeyError, TypeError) as exc:
                raise KeystoreError(f"{REVOCATION_FILE} is unreadable: {exc}") from None
        return newest

    def rotate(self) -> ReleaseKeyRecord:
        """A new release key certified by root becomes current; the old one stays valid until revoked."""
        with self._locked():
            index = self._require_index()
            record = self._new_release_key(self._root_key(index))
            index["release_keys"].append(record)
            index["current"] = record["key_id"]
            self._save_index(index)
        return ReleaseKeyRecord(**record)

    def revoke(self, key_id: str) -> Revocation:
        """Root signs a new revocation list (serial + 1) adding ``key_id``. The current key cannot be
        revoked (rotate first: the server must always be able to sign)."""
        with self._locked():
            index = self._require_index()
            if any(r["key_id"] == key_id for r in index["roots"]):
                raise Conflict(
                    "root keys cannot be revoked by a revocation list; retire a root with a new trust anchor"
                )
            record = next((r for r in index["release_keys"] if r["key_id"] == key_id), None)
            if record is None:
                raise NotFound(f"no release key with id {key_id}")
            if record["revoked_at"] is not None:
                raise Conflict(f"release key {key_id[:12]} is already revoked (at {record['revoked_at']})")
            if index["current"] == key_id:
                raise Conflict("that is the current release key: rotate first, then revoke the old key")
            previous = self._newest_revocation(index)
            serial = int(previous["serial"]) + 1
            revoked = sorted({*previous["revoked_key_ids"], key_id})
            issued = _now()
            data = build_revocation_list(
                self._root_key(index), serial=serial, revoked_key_ids=revoked, issued_at=issued
            )
            _write_atomic(self.directory / REVOCATION_FILE, data)
            record["revoked_at"] = format_timestamp(issued)
            index["revocation"] = {
                "serial": serial,
                "issued_at": format_timestamp(issued),
                "revoked_key_ids": revoked,
            }
            self._save_index(index)
        return Revocation(serial, format_timestamp(issued), tuple(revoked))
