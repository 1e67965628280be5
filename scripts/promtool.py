"""Find or fetch Prometheus' ``promtool``, which checks and unit-tests the alert rules.

Stdlib only, so it runs with any ``python3 >= 3.11`` (no venv needed). Used by
``tests/monitoring/conftest.py`` (pytest) and from the shell::

    python3 scripts/promtool.py        # prints the path of a working promtool

``ensure_promtool()`` returns ``promtool`` from PATH when there is one. Otherwise it uses a
copy cached at ``${CRM_TOOLS_CACHE:-~/.cache/crm-triggers}/promtool-<debversion>/promtool``,
filled once from Debian's ``prometheus`` package: ``apt-get download prometheus`` (no
install, no root needed unless apt's package lists are empty, when ``apt-get update`` runs
once first), then ``dpkg-deb -x`` and a copy of ``usr/bin/promtool``, a static binary. A lock
file keeps parallel pytest sessions from filling the cache twice. If the fetch fails this
raises ``PromtoolError`` saying why; there is no fallback.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

PACKAGE = "prometheus"
LOCK_NAME = ".promtool.lock"
TIMEOUT_S = 600


class PromtoolError(RuntimeError):
    """promtool is not on PATH and could not be fetched."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cache_root() -> Path:
    configured = os.environ.get("CRM_TOOLS_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "crm-triggers"


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PromtoolError(f"timed out after {TIMEOUT_S} s: {' '.join(cmd)}") from exc


def _works(promtool: Path) -> bool:
    if not os.access(promtool, os.X_OK):
        return False
    try:
        return _run([str(promtool), "--version"]).returncode == 0
    except (OSError, PromtoolError):
        return False


def cached() -> Path | None:
    """The newest working promtool in the cache, if any."""
    candidates = sorted(
        cache_root().glob("promtool-*/promtool"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PromtoolError(
            f"promtool is not on PATH and {name} is not available to fetch it ({hint}): "
            "install promtool (Debian: `apt-get install prometheus`; or the release tarball "
            "from https://prometheus.io/download/) and put it on PATH"
        )
    return found


def _download(apt_get: str, work: Path) -> Path:
    """``apt-get download prometheus`` into ``work``; ``apt-get update`` once if it fails."""
    cmd = [apt_get, "download", PACKAGE]
    proc = _run(cmd, cwd=work)
    if proc.returncode != 0:
        first = proc.stdout + proc.stderr
        _say(f"`{' '.join(cmd)}` failed; running `apt-get update` once and trying again...")
        update = _run([apt_get, "update"])
        if update.returncode != 0:
            raise PromtoolError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{_tail(first)}\n"
                f"and `apt-get update` failed too (exit {update.returncode}; it needs root "
                "and access to Debian's repositories):\n" + _tail(update.stdout + update.stderr)
            )
        proc = _run(cmd, cwd=work)
        if proc.returncode != 0:
            raise PromtoolError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}), also after "
                "`apt-get update`:\n" + _tail(proc.stdout + proc.stderr)
            )
    debs = sorted(work.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise PromtoolError(
            f"`{' '.join(cmd)}` succeeded but left no {PACKAGE}_*.deb in {work}\n"
            + _tail(proc.stdout + proc.stderr)
        )
    return debs[-1]


def _deb_version(dpkg_deb: str, deb: Path) -> str:
    proc = _run([dpkg_deb, "--field", str(deb), "Version"])
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version:
        raise PromtoolError(f"cannot read the version of {deb}: {_tail(proc.stderr)}")
    return re.sub(r"[^A-Za-z0-9.+~-]", "_", version)  # an epoch's ':' becomes '_'


def fetch() -> Path:
    """Fill the cache from Debian's prometheus package and return the cached promtool."""
    apt_get = _tool("apt-get", "not a Debian/Ubuntu system?")
    dpkg_deb = _tool("dpkg-deb", "not a Debian/Ubuntu system?")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="promtool-fetch-", dir=root))
    try:
        work.chmod(0o755)  # apt-get download as root hands the file to the _apt user
        _say(f"fetching promtool from Debian's {PACKAGE} package (first run only)...")
        deb = _download(apt_get, work)
        version = _deb_version(dpkg_deb, deb)
        tree = work / "tree"
        proc = _run([dpkg_deb, "-x", str(deb), str(tree)])
        if proc.returncode != 0:
            raise PromtoolError(
                f"`dpkg-deb -x {deb.name}` failed (exit {proc.returncode}):\n"
                + _tail(proc.stdout + proc.stderr)
            )
        extracted = tree / "usr" / "bin" / "promtool"
        if not extracted.is_file():
            raise PromtoolError(f"{deb.name} holds no usr/bin/promtool")
        staged = work / "staged"
        staged.mkdir()
        shutil.copy2(extracted, staged / "promtool")
        (staged / "promtool").chmod(0o755)
        check = _run([str(staged / "promtool"), "--version"])
        if check.returncode != 0:
            raise PromtoolError(
                f"the promtool of {deb.name} does not run (exit {check.returncode}):\n"
                + _tail(check.stdout + check.stderr)
            )
        target = root / f"promtool-{version}"
        if target.exists():  # a broken earlier copy
            shutil.rmtree(target)
        staged.rename(target)
        _say(f"promtool {version} cached at {target / 'promtool'}")
        return target / "promtool"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_promtool() -> Path:
    """Return a working promtool: from PATH, else cached, else fetched into the cache."""
    on_path = shutil.which("promtool")
    if on_path is not None:
        return Path(on_path)
    found = cached()
    if found is not None:
        return found
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / LOCK_NAME):
        found = cached()  # another process fetched it meanwhile
        if found is not None and _works(found):
            return found
        return fetch()


def main() -> int:
    try:
        print(ensure_promtool())
    except PromtoolError as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
