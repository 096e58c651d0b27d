"""``mailprov dkim sync``: the key files and selector map rspamd signs with.

rspamd's ``dkim_signing`` (as the ISPmail guide configures it) reads a key file
``$domain.$selector.key`` and a selector map of ``domain selector`` lines. This
writes both from the database, on the mail host, and is safe to run from cron
as often as wanted:

- idempotent: a file whose content and permissions are right is left alone,
  and nothing changes when nothing changed;
- atomic: every file is written beside its final name and renamed over it, so
  rspamd never reads half a key or half a map; key files are in place before
  the map names them, and a key's file is removed only after the map stopped
  naming it (and only files this command wrote: a manifest lists them);
- private: key files are mode 0640 in a 0750 directory, group ``_rspamd``
  (rspamd's scanner processes must open them), owned by whoever runs this.

Every key that exists gets its file (pending and retired ones too, so a map
rspamd has not reloaded yet still finds its key); the map names each domain's
active key.
"""

import fcntl
import grp
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr
from sqlmodel import Session

from app.crud.dkim import sealed_keys
from app.dkim import KeyUnavailable, unseal

MANIFEST = ".mailprov-dkim-managed"
LOCK = ".mailprov-dkim.lock"
KEY_MODE = 0o640
DIR_MODE = 0o750
MAP_MODE = 0o644
DEFAULT_GROUP = "_rspamd"


class SyncError(RuntimeError):
    """The command cannot run at all (no such group, directory not writable)."""


@dataclass
class SyncResult:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    map_changed: bool = False
    signing: int = 0  # domains in the selector map
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed or self.map_changed)

    @property
    def needs_reload(self) -> bool:
        """rspamd must reread: the map, or a key file it may sign with, is new.
        A removed file is one the map no longer names: nothing to reread."""
        return bool(self.written or self.map_changed)


def group_id(name: str | None) -> int | None:
    """The gid of ``name``; None for no group change. Raises SyncError if unknown."""
    if name is None or name == "":
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SyncError(f"no group {name!r} on this host (rspamd's is {DEFAULT_GROUP})") from None


def default_group() -> str | None:
    try:
        grp.getgrnam(DEFAULT_GROUP)
    except KeyError:
        return None
    return DEFAULT_GROUP


def _current(path: Path, content: bytes, mode: int, gid: int | None) -> bool:
    try:
        st = path.lstat()
        if not path.is_file() or path.is_symlink():
            return False
        if (st.st_mode & 0o7777) != mode or (gid is not None and st.st_gid != gid):
            return False
        return path.read_bytes() == content
    except OSError:
        return False


def write_atomic(path: Path, content: bytes, mode: int, gid: int | None) -> bool:
    """Replace ``path`` by ``content`` in one rename; False when it was already so."""
    if _current(path, content, mode, gid):
        return False
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # Mode and group before the first byte: the key is never readable by others.
        os.fchmod(fd, mode)
        if gid is not None:
            os.fchown(fd, -1, gid)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One sync at a time per key directory (cron and a hand-run one may meet)."""
    with open(directory / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _prepare(directory: Path, gid: int | None) -> None:
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)
    if gid is not None:
        os.chown(directory, -1, gid)
    if not os.access(directory, os.W_OK):
        raise SyncError(f"{directory} is not writable by this user")


def key_file_name(domain: str, selector: str) -> str:
    # Canonical names ([a-z0-9.-]) and selectors ([a-z0-9-]): nothing to escape.
    return f"{domain}.{selector}.key"


def selector_map_text(active: dict[str, str]) -> str:
    lines = [f"{domain} {selector}\n" for domain, selector in sorted(active.items())]
    return "# written by mailprov dkim sync: domain selector (do not edit)\n" + "".join(lines)


def sync(
    session: Session,
    key_dir: Path,
    selector_map: Path,
    key_secrets: list[SecretStr],
    group: str | None,
) -> SyncResult:
    gid = group_id(group)
    _prepare(key_dir, gid)
    result = SyncResult()
    with _locked(key_dir):
        rows = sealed_keys(session)
        session.close()  # everything is read: no connection held while writing files
        wanted: set[str] = set()
        active: dict[str, str] = {}
        for domain, key in rows:
            name = key_file_name(domain, key.selector)
            try:
                private = unseal(key.private_key, domain, key.selector, key_secrets)
            except KeyUnavailable as exc:
                result.errors.append(str(exc))
                if (key_dir / name).is_file():
                    wanted.add(name)  # keep what an earlier run wrote rather than break signing
                    if key.state == "active":
                        active[domain] = key.selector
                continue
            wanted.add(name)
            if write_atomic(key_dir / name, private, KEY_MODE, gid):
                result.written.append(name)
            else:
                result.unchanged += 1
            if key.state == "active":
                active[domain] = key.selector
        result.signing = len(active)
        result.map_changed = write_atomic(
            selector_map, selector_map_text(active).encode(), MAP_MODE, None
        )
        # Only now, with the map no longer naming them: files of keys that are gone.
        manifest = key_dir / MANIFEST
        try:
            before = set(manifest.read_text().split())
        except FileNotFoundError:
            before = set()
        for name in sorted(before - wanted):
            path = key_dir / name
            if path.parent == key_dir and path.is_file():
                path.unlink()
                result.removed.append(name)
        write_atomic(manifest, "".join(f"{n}\n" for n in sorted(wanted)).encode(), 0o600, None)
    return result
