"""Controller-side build of a release: one artifact per target platform.

A release starts from one of three sources (asgi_app_source):
  - a wheel file (``dist/app-1.0.0-py3-none-any.whl``);
  - a project directory with a pyproject.toml and a lock: a uv.lock (in the project or at the
    root of the uv workspace it belongs to), a pylock.toml (PEP 751), or a requirements file
    whose every line is pinned with a hash;
  - a git URL in pip's form, ``git+https://host/repo.git@ref#subdirectory=backend``, checked
    out here, so hosts need neither git nor credentials.

The source stage (``build_source``) checks the lock, builds the app's wheels and exports every
locked dependency with its hashes. The platform stage (``build_artifact``) keeps the
dependencies whose markers hold on one host platform, downloads exactly those wheels (pip
checks every hash) and packs them with the app's wheels, the project's files and a manifest
into one tar. Every host of that platform installs from it with no index, so two hosts of one
release hold the same bytes.

Pure Python and the standard library, plus ``packaging`` (a dependency of ansible-core);
uv and pip run as subprocesses of the controller's interpreter. Imported by the asgi_app_build
module and by the unit tests.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

VARIABLE = "asgi_app_source"
SOURCE_FORMS = (
    "a wheel file (path/to/app-1.0.0-py3-none-any.whl), a project directory holding a "
    "pyproject.toml and its lock, or a git URL (git+https://host/repo.git@ref#subdirectory=dir)"
)
# Files and directories of a project that never belong in a release.
EXCLUDED_NAMES = {
    ".git",
    ".hg",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    "node_modules",
    "dist",
    "build",
    ".env",
}
# Requirement files recognised as a lock when they pin every line with a hash.
REQUIREMENTS_LOCKS = ("requirements.lock", "requirements.txt", "requirements.lock.txt")
LOCK_HELP = (
    "Lock it with one of: `uv lock` (uv.lock), "
    "`uv export --format pylock.toml -o pylock.toml`, or "
    "`uv pip compile pyproject.toml --generate-hashes -o requirements.txt`, and keep the lock beside it."
)


class BuildError(Exception):
    """A problem with the user's input, worded for the operator."""


@dataclass(frozen=True)
class Pin:
    """One locked distribution: name==version, its hashes, and the marker it applies under."""

    name: str
    version: str
    hashes: tuple[str, ...]
    marker: str = ""

    def applies(self, environment: dict[str, str]) -> bool:
        return not self.marker or Marker(self.marker).evaluate(environment)

    def line(self) -> str:
        hashes = " ".join(f"--hash={h}" for h in self.hashes)
        return f"{self.name}=={self.version} {hashes}".strip()


@dataclass
class Source:
    kind: str  # wheel, project or git
    location: str  # a path, or the git URL without its ref and fragment
    ref: str = ""
    subdirectory: str = ""


@dataclass
class Lock:
    kind: str  # uv, pylock or requirements
    path: Path
    root: Path  # where uv runs: the workspace root for a uv.lock


@dataclass
class Project:
    directory: Path
    name: str
    version: str
    requires_python: str
    dependencies: list[str] = field(default_factory=list)


# --- Running tools ----------------------------------------------------------------------


def run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Runs a tool; a failure raises BuildError with its own words."""
    result = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **UV_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(
            f"`{' '.join(redact(a) for a in argv[:6])} ...` failed: {tail(result.stderr or result.stdout)}"
        )
    return result.stdout


def tail(text: str, lines: int = 12) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def uv(*args: str) -> list[str]:
    return [sys.executable, "-m", "uv", *args]


# uv never fetches interpreters: builds run with the controller's own Python, whatever
# requires-python says (the hosts' Pythons are checked against it instead).
UV_ENV = {"UV_PYTHON_DOWNLOADS": "never", "UV_PYTHON": sys.executable}


def url_secrets(spec: str) -> list[str]:
    """The secret a git+http(s) URL in asgi_app_source carries, to keep out of output: its
    password, or its user when it has none (a token), as written and decoded. Never the
    user beside a password, nor ssh's user (git@...): Ansible would mask those words
    wherever they appear in the result."""
    parts = urlsplit(spec.strip().removeprefix("git+"))
    if parts.scheme not in ("http", "https"):
        return []
    secret = parts.password if parts.password else parts.username
    return sorted({secret, unquote(secret)}) if secret else []


def redact(url: str) -> str:
    """A URL without the user:password it may carry."""
    parts = urlsplit(url)
    if parts.password or parts.username:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=f"***@{netloc}"))
    return url


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- Sources ----------------------------------------------------------------------------


def parse_source(spec: str) -> Source:
    """Which of the three source forms `spec` is; anything else is refused."""
    spec = spec.strip()
    if spec.startswith("git+"):
        parts = urlsplit(spec[4:])
        if not parts.scheme or not (parts.netloc or parts.scheme == "file"):
            raise BuildError(
                f"{VARIABLE}: '{redact(spec)}' is not a git URL. It must be one of: {SOURCE_FORMS}."
            )
        path, ref = parts.path, ""
        if "@" in path:
            path, _, ref = path.rpartition("@")
        subdirectory = ""
        for item in parts.fragment.split("&"):
            key, _, value = item.partition("=")
            if key == "subdirectory":
                subdirectory = value.strip("/")
        if ".." in Path(subdirectory).parts:
            raise BuildError(f"{VARIABLE}: the subdirectory '{subdirectory}' leaves the repository.")
        location = urlunsplit(parts._replace(path=path, fragment=""))
        return Source("git", location, ref or "HEAD", subdirectory)
    path = Path(spec).expanduser()
    if path.is_file() and path.name.endswith(".whl"):
        return Source("wheel", str(path.resolve()))
    if path.is_dir() and (path / "pyproject.toml").is_file():
        return Source("project", str(path.resolve()))
    if path.is_dir():
        raise BuildError(
            f"{VARIABLE}: the directory '{spec}' has no pyproject.toml. It must be one of: {SOURCE_FORMS}."
        )
    raise BuildError(
        f"{VARIABLE}: '{redact(spec)}' is none of the source forms. It must be one of: {SOURCE_FORMS}."
    )


def credentials(url: str) -> tuple[str, dict[str, str]]:
    """Splits an http(s) URL's user:password off. Returns the URL without it, and the
    environment that hands it to git as an Authorization header for that origin alone: the
    secret never reaches git's command line (the process list), its FETCH_HEAD or its config.
    The header comes after any GIT_CONFIG_* entries the controller's environment has, which
    it keeps. Other URLs (ssh's user is no secret) come back as they are."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not (parts.username or parts.password):
        return url, {}
    netloc = parts.netloc.rpartition("@")[2]  # the host as written: [IPv6] and port kept
    userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    token = base64.b64encode(userinfo.encode()).decode()
    index = int(os.environ.get("GIT_CONFIG_COUNT") or 0)
    return urlunsplit(parts._replace(netloc=netloc)), {
        "GIT_CONFIG_COUNT": str(index + 1),
        f"GIT_CONFIG_KEY_{index}": f"http.{parts.scheme}://{netloc}/.extraHeader",
        f"GIT_CONFIG_VALUE_{index}": f"Authorization: Basic {token}",
    }


def checkout(source: Source, cache: Path) -> tuple[Path, str]:
    """Checks the git source out on the controller: the repository at its ref, as files.
    Returns the project directory and the commit."""
    location, auth_env = credentials(source.location)
    repo = cache / "git" / hashlib.sha256(location.encode()).hexdigest()[:16]
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(repo, ignore_errors=True)
        run(["git", "init", "--quiet", "--bare", str(repo)], env=env)
    try:
        run(
            ["git", "-C", str(repo), "fetch", "--quiet", "--depth", "1", location, source.ref],
            env={**env, **auth_env},
        )
    except BuildError as error:
        raise BuildError(
            f"{VARIABLE}: cannot fetch ref '{source.ref}' of {redact(source.location)}: {error}"
        ) from None
    commit = run(["git", "-C", str(repo), "rev-parse", "FETCH_HEAD^{commit}"]).strip()
    tree = cache / "git" / "trees" / commit
    if not tree.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f".{commit}-", dir=_ensure(tree.parent)))
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        staging.rename(tree)
    project = tree / source.subdirectory if source.subdirectory else tree
    if not (project / "pyproject.toml").is_file():
        where = f"'{source.subdirectory}' of " if source.subdirectory else ""
        raise BuildError(
            f"{VARIABLE}: {where}{redact(source.location)} at {source.ref} ({commit[:12]}) "
            "has no pyproject.toml."
        )
    return project, commit


def read_project(directory: Path) -> Project:
    data = tomllib.loads((directory / "pyproject.toml").read_text())
    meta = data.get("project", {})
    name, version = meta.get("name"), meta.get("version")
    if not name or not version:
        raise BuildError(
            f"{VARIABLE}: {directory}/pyproject.toml must give [project] name and a static version "
            f"(got name={name!r}, version={version!r})."
        )
    return Project(
        directory, name, str(version), meta.get("requires-python", ""), list(meta.get("dependencies", []))
    )


def find_lock(project: Path) -> Lock:
    """The project's lock: a uv.lock in it or at its uv workspace's root, a pylock.toml, or a
    requirements file pinned with hashes. None is refused."""
    for directory in [project, *project.parents]:
        lock = directory / "uv.lock"
        if lock.is_file() and (directory == project or _is_workspace_root(directory, project)):
            return Lock("uv", lock, directory)
        if (
            (directory / ".git").exists()
            or ((directory / "pyproject.toml").is_file() and directory != project)
        ) and not _is_workspace_root(directory, project):
            break
    if (project / "pylock.toml").is_file():
        return Lock("pylock", project / "pylock.toml", project)
    for name in REQUIREMENTS_LOCKS:
        if (project / name).is_file():
            return Lock("requirements", project / name, project)
    raise BuildError(
        f"{VARIABLE}: the project {project} has no lock (uv.lock, pylock.toml or requirements.txt). "
        f"{LOCK_HELP}"
    )


def _is_workspace_root(root: Path, member: Path) -> bool:
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    members = data.get("tool", {}).get("uv", {}).get("workspace", {}).get("members", [])
    relative = member.relative_to(root)
    return any(relative.match(pattern) or str(relative) == pattern for pattern in members)


# --- Locks ------------------------------------------------------------------------------


def parse_requirements(text: str, origin: str) -> tuple[list[Pin], list[str]]:
    """Pins from a requirements file with hashes, and its local path entries (workspace
    members, the project itself). A line that is not name==version with a hash is refused."""
    pins: list[Pin] = []
    local: list[str] = []
    logical = re.sub(r"\\\r?\n", " ", text)
    for number, raw in enumerate(logical.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith(("-e ", "--editable ")):
            local.append(line.split(None, 1)[1])
            continue
        if line.startswith(("./", "../", "/", ".")) or line == ".":
            local.append(line)
            continue
        if line.startswith("-"):
            if line.startswith(("--index-url", "--extra-index-url", "-i ", "--find-links")):
                continue
            raise BuildError(f"{origin}: line {number}: '{line}' is not supported in a lock.")
        requirement_text, *hash_parts = re.split(r"\s+--hash[= ]", line)
        hashes = tuple(h.strip() for h in hash_parts if h.strip())
        try:
            requirement = Requirement(requirement_text.strip())
        except InvalidRequirement as error:
            raise BuildError(f"{origin}: line {number}: '{requirement_text.strip()}': {error}") from None
        if requirement.url and requirement.url.startswith("file:"):
            local.append(requirement.url)
            continue
        specs = list(requirement.specifier)
        if requirement.url or len(specs) != 1 or specs[0].operator not in ("==", "==="):
            raise BuildError(
                f"{origin}: line {number}: '{requirement_text.strip()}' is not pinned to one version "
                f"(a lock pins every package as name==version --hash=sha256:...). {LOCK_HELP}"
            )
        if not hashes:
            raise BuildError(
                f"{origin}: line {number}: {requirement.name} has no --hash; a lock must pin every "
                f"package with its hashes. {LOCK_HELP}"
            )
        pins.append(
            Pin(
                canonicalize_name(requirement.name),
                specs[0].version,
                hashes,
                str(requirement.marker) if requirement.marker else "",
            )
        )
    return pins, local


def parse_pylock(path: Path, project_name: str) -> list[Pin]:
    """Pins from a PEP 751 lock: every package but the project itself, with its file hashes."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise BuildError(f"{path}: not valid TOML: {error}") from None
    pins = []
    for package in data.get("packages", []):
        name = canonicalize_name(package.get("name", ""))
        if name == canonicalize_name(project_name) or "directory" in package or "vcs" in package:
            continue
        version = package.get("version")
        hashes = [
            f"{algorithm}:{value}"
            for item in [*package.get("wheels", []), package.get("sdist", {})]
            for algorithm, value in (item.get("hashes") or {}).items()
        ]
        if not version or not hashes:
            raise BuildError(f"{path}: package {name} has no version or no hashes. {LOCK_HELP}")
        pins.append(Pin(name, str(version), tuple(hashes), package.get("marker", "")))
    return pins


def check_fresh(project: Project, pins: list[Pin], lock: Lock) -> None:
    """A pylock.toml or requirements lock is stale when a dependency that pyproject.toml
    declares is missing from it, or pinned outside the declared range."""
    pinned: dict[str, list[str]] = {}
    for pin in pins:
        pinned.setdefault(pin.name, []).append(pin.version)
    problems = []
    for text in project.dependencies:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pinned:
            if requirement.marker is None:
                problems.append(f"{requirement.name} is not in it")
        elif outside := [v for v in pinned[name] if not requirement.specifier.contains(v, prereleases=True)]:
            problems.append(
                f"{requirement.name} is pinned to {', '.join(outside)}, outside '{requirement.specifier}'"
            )
    if problems:
        raise BuildError(
            f"{VARIABLE}: the lock {lock.path} is out of date with {project.directory}/pyproject.toml: "
            f"{'; '.join(problems)}. Regenerate the lock. {LOCK_HELP}"
        )


def export_uv_lock(project: Project, lock: Lock) -> tuple[list[Pin], list[Path]]:
    """The uv.lock's dependencies of the project (no dev groups) with hashes, and the workspace
    members it depends on. A lock out of date with pyproject.toml is refused."""
    argv = uv(
        "export", "--locked", "--no-dev", "--no-editable", "--format", "requirements-txt",
        "--no-header", "--no-annotate", "--package", project.name,
    )  # fmt: skip
    result = subprocess.run(
        argv, cwd=lock.root, env={**os.environ, **UV_ENV}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        message = tail(result.stderr)
        if "needs to be updated" in message:
            raise BuildError(
                f"{VARIABLE}: the lock {lock.path} is out of date with the project's pyproject.toml "
                f"(uv export --locked: {message}). Run `uv lock` in {lock.root} and commit uv.lock."
            )
        raise BuildError(f"{VARIABLE}: uv export of {lock.path} failed: {message}")
    pins, local = parse_requirements(result.stdout, str(lock.path))
    members = [(lock.root / entry).resolve() for entry in local]
    return pins, [m for m in members if m != project.directory.resolve()]


def locked_pins(project: Project, lock: Lock) -> tuple[list[Pin], list[Path]]:
    if lock.kind == "uv":
        return export_uv_lock(project, lock)
    if lock.kind == "pylock":
        pins = parse_pylock(lock.path, project.name)
    else:
        pins, _ = parse_requirements(lock.path.read_text(), str(lock.path))
    check_fresh(project, pins, lock)
    return pins, []


# --- Project files ----------------------------------------------------------------------


def project_files(directory: Path, declared: list[str]) -> list[Path]:
    """The files a release carries beside its package: the declared ones (files or directories,
    relative to the project), else every file of the project but caches, VCS data, venvs, builds
    and .env files."""
    roots = [directory / entry for entry in declared] if declared else [directory]
    files: list[Path] = []
    for root in roots:
        if not root.resolve().is_relative_to(directory.resolve()):
            raise BuildError(f"asgi_app_project_files: '{root}' is outside the project {directory}.")
        if not root.exists():
            raise BuildError(
                f"asgi_app_project_files: '{root.relative_to(directory)}' does not exist in {directory}."
            )
        if root.is_file():
            files.append(root)
            continue
        for current, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_NAMES and not d.endswith(".egg-info"))
            files += [Path(current) / name for name in sorted(names) if not _local_only(name)]
    return sorted(set(files))


def _local_only(name: str) -> bool:
    """Files that belong to a developer's machine, never to a release: .env, .env.production,
    .envrc and the like (settings and secrets reach hosts through asgi_app_env and
    asgi_app_secrets), and what EXCLUDED_NAMES lists."""
    return name in EXCLUDED_NAMES or name in (".env", ".envrc") or name.startswith(".env.")


def digest_files(base: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(base)).encode() + b"\0" + sha256_file(path).encode() + b"\0")
    return digest.hexdigest()


def serialised(build: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Runs a build stage under the lock of the cache it is given (its `cache` argument)."""
    parameters = inspect.signature(build)

    @functools.wraps(build)
    def locked(*args: Any, **kwargs: Any) -> dict[str, Any]:
        with exclusive(parameters.bind(*args, **kwargs).arguments["cache"]):
            return build(*args, **kwargs)

    return locked


@contextlib.contextmanager
def exclusive(cache: Path) -> Iterator[None]:
    """One build at a time in a cache, across processes (two runs on one controller)."""
    with (_ensure(cache) / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- The source stage -------------------------------------------------------------------


def wheel_metadata(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        message = Parser().parsestr(archive.read(name).decode())
    return {
        "name": canonicalize_name(message["Name"]),
        "version": message["Version"],
        "requires_python": message.get("Requires-Python", "") or "",
    }


@serialised
def build_source(
    spec: str,
    cache: Path,
    server_packages: list[str],
    python: str,
    declared_files: list[str],
    index_env: dict[str, str],
) -> dict[str, Any]:
    """Checks the source and its lock, builds the app's wheels and the full locked set of
    dependencies (the app's lock plus the server stack, resolved against it). Cached by the
    digest of everything that goes in; returns the build's description."""
    source = parse_source(spec)
    commit = ""
    if source.kind == "git":
        directory, commit = checkout(source, cache)
        source_kind = "git"
    else:
        directory = Path(source.location)
        source_kind = source.kind

    if source_kind == "wheel":
        wheel = Path(source.location)
        meta = wheel_metadata(wheel)
        inputs = {"wheel": sha256_file(wheel)}
        files: list[Path] = []
        lock = None
        project = None
    else:
        project = read_project(directory)
        lock = find_lock(directory)
        files = project_files(directory, declared_files)
        meta = {
            "name": canonicalize_name(project.name),
            "version": project.version,
            "requires_python": project.requires_python,
        }
        # The key covers the whole project (its code builds the wheel), whatever subset the
        # release carries beside it.
        inputs = {
            "project": digest_files(directory, project_files(directory, [])),
            "lock": sha256_file(lock.path),
        }
        if lock.kind == "uv" and lock.root != directory:
            # The workspace members the app depends on are built into the release too.
            inputs["workspace"] = digest_files(lock.root, project_files(lock.root, []))
    inputs.update({"server_packages": server_packages, "python": python, "files": declared_files})
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    release = f"{meta['version']}-{key[:12]}"
    out = cache / "builds" / release
    described = out / "source.json"
    if described.is_file():
        return {**json.loads(described.read_text()), "changed": False}

    staging = Path(tempfile.mkdtemp(prefix=f".{release}-", dir=_ensure(cache / "builds")))
    wheels = staging / "wheels"
    wheels.mkdir()
    env = dict(index_env)
    if source_kind == "wheel":
        shutil.copy2(source.location, wheels / Path(source.location).name)
        app_pins: list[Pin] = []
        resolve_inputs = [str(wheels / Path(source.location).name)]
    else:
        assert project is not None
        assert lock is not None
        app_pins, members = locked_pins(project, lock)
        for target in [directory, *members]:
            try:
                run(
                    uv("build", "--wheel", "--quiet", "--out-dir", str(wheels), str(target)),
                    cwd=lock.root,
                    env=env,
                )
            except BuildError as error:
                raise BuildError(f"{VARIABLE}: building the wheel of {target} failed: {error}") from None
        resolve_inputs = []
        with tarfile.open(staging / "project.tar", "w") as tar:
            for path in files:
                tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    app_wheels = sorted(wheels.glob("*.whl"))
    local = {wheel_metadata(w)["name"]: w for w in app_wheels}
    server_pins = resolve_server_stack(server_packages + resolve_inputs, app_pins, staging, meta, env)
    # A lock may pin one name twice under different markers (a forked resolution): every pin
    # of the app's lock stays; the server stack adds only the names the lock does not pin.
    locked_names = {pin.name for pin in app_pins} | set(local)
    merged = [pin for pin in server_pins if pin.name not in locked_names] + app_pins
    description = {
        "release": release,
        "name": meta["name"],
        "version": meta["version"],
        "requires_python": meta["requires_python"],
        "source": {
            "kind": source_kind,
            "location": redact(source.location),
            "ref": source.ref,
            "commit": commit,
        },
        "lock": {"kind": lock.kind, "path": str(lock.path)} if lock else {"kind": "resolved", "path": ""},
        "app_wheels": {name: {"file": w.name, "sha256": sha256_file(w)} for name, w in local.items()},
        "pins": [
            pin.__dict__ | {"hashes": list(pin.hashes)}
            for pin in sorted(merged, key=lambda p: (p.name, p.marker))
        ],
        "server_packages": [canonicalize_name(Requirement(p).name) for p in server_packages],
        "python": python,
    }
    (staging / "source.json").write_text(json.dumps(description, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {**description, "changed": True}


def resolve_server_stack(
    requirements: list[str], app_pins: list[Pin], work: Path, meta: dict[str, Any], env: dict[str, str]
) -> list[Pin]:
    """The server stack (and, for a wheel source, the wheel's own dependencies), resolved for
    every platform at once and constrained to the versions the app's lock pins."""
    (work / "server.in").write_text("\n".join(requirements) + "\n")
    (work / "app-pins.txt").write_text(
        "".join(f"{p.name}=={p.version}" + (f" ; {p.marker}" if p.marker else "") + "\n" for p in app_pins)
    )
    floor = python_floor(meta["requires_python"])
    argv = uv(
        "pip", "compile", "--quiet", "--universal", "--generate-hashes", "--no-header", "--no-annotate",
        "--python-version", floor, "--constraints", str(work / "app-pins.txt"), str(work / "server.in"),
    )  # fmt: skip
    result = subprocess.run(
        argv, env={**os.environ, **UV_ENV, **env}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(
            f"asgi_app_server_packages: {requirements} cannot be installed beside the versions the "
            f"app's lock pins: {tail(result.stderr)}. Align asgi_app_server_packages with the lock, or "
            "add the server packages to the project and lock them."
        )
    pins, _ = parse_requirements(result.stdout, "server stack")
    return pins


def python_floor(requires_python: str) -> str:
    """The lowest minor version `requires-python` admits (3.9 when it says nothing)."""
    if requires_python:
        specifier = SpecifierSet(requires_python)
        for minor in range(8, 20):
            if specifier.contains(f"3.{minor}.99", prereleases=True) or specifier.contains(f"3.{minor}.0"):
                return f"3.{minor}"
    return "3.9"


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- The platform stage -----------------------------------------------------------------


def check_python(description: dict[str, Any], host: str, interpreter: str, version: str) -> None:
    required = description["requires_python"]
    if required and not SpecifierSet(required).contains(version, prereleases=True):
        raise BuildError(
            f"{VARIABLE}: {description['name']} {description['version']} requires Python {required}, "
            f"but {host}'s {interpreter} is Python {version}. Set asgi_app_python to an interpreter it "
            "accepts, or change requires-python."
        )


def platform_key(platform: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(platform, sort_keys=True).encode()).hexdigest()[:12]


RUNTIME_PACKAGES = ("gunicorn", "uvicorn", "uvicorn-worker", "uvloop", "httptools")


@serialised
def build_artifact(
    description: dict[str, Any],
    platform: dict[str, Any],
    cache: Path,
    tools: list[str],
    index_env: dict[str, str],
) -> dict[str, Any]:
    """The release's artifact for one host platform: its wheels (hash-checked), the app's
    project files and a manifest, as one tar. Cached per release and platform."""
    release = description["release"]
    build_dir = cache / "builds" / release
    key = platform_key(platform)
    # An artifact names the tools that go with it: another uv is another artifact.
    artifact_key = hashlib.sha256(json.dumps([key, tools]).encode()).hexdigest()[:12]
    artifact = build_dir / f"artifact-{artifact_key}.tar"
    manifest_path = build_dir / f"manifest-{artifact_key}.json"
    if artifact.is_file() and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        return {**_artifact_result(artifact, manifest, cache / "tools" / key), "changed": False}

    environment = platform["markers"]
    pins = [Pin(p["name"], p["version"], tuple(p["hashes"]), p["marker"]) for p in description["pins"]]
    chosen = [pin for pin in pins if pin.applies(environment)]
    staging = Path(tempfile.mkdtemp(prefix=f".artifact-{key}-", dir=build_dir))
    wheels = staging / "wheels"
    wheels.mkdir()
    fetch_wheels(chosen, wheels, cache / "wheels" / key, platform, index_env)
    for entry in description["app_wheels"].values():
        shutil.copy2(build_dir / "wheels" / entry["file"], wheels / entry["file"])
    app_lines = [
        f"{name}=={description['version'] if name == description['name'] else _wheel_version(entry['file'])} "
        f"--hash=sha256:{entry['sha256']}"
        for name, entry in sorted(description["app_wheels"].items())
    ]
    requirements = "".join(pin.line() + "\n" for pin in chosen) + "".join(line + "\n" for line in app_lines)
    (staging / "requirements.txt").write_text(requirements)

    tool_dir = _ensure(cache / "tools" / key)
    (staging / "tools.txt").write_text("".join(t + "\n" for t in tools))
    tool_wheels = {
        canonicalize_name(Requirement(t).name): _find_wheel(tool_dir, Requirement(t)) for t in tools
    }
    if not all(tool_wheels.values()):
        download(staging / "tools.txt", tool_dir, platform, index_env, "the kit's tools", hashed=False)
        tool_wheels = {
            canonicalize_name(Requirement(t).name): _find_wheel(tool_dir, Requirement(t)) for t in tools
        }

    versions = {pin.name: pin.version for pin in chosen}
    manifest = {
        "id": release,
        "name": description["name"],
        "version": description["version"],
        "source": description["source"],
        "lock": description["lock"],
        "requires_python": description["requires_python"],
        "platform": key,
        "python_version": platform["python_full"],
        "runtime": {
            "python": description["python"],
            "python_version": platform["python_full"],
            "packages": {name: versions[name] for name in RUNTIME_PACKAGES if name in versions},
        },
        "distributions": {
            **versions,
            **{
                name: line.split()[0].split("==")[1]
                for name, line in zip(sorted(description["app_wheels"]), app_lines, strict=True)
            },
        },
        "tools": {name: path.name for name, path in tool_wheels.items() if path},
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    with tarfile.open(artifact.with_suffix(".partial"), "w") as tar:
        for name in ("manifest.json", "requirements.txt", "wheels"):
            tar.add(staging / name, arcname=name)
        if (build_dir / "project.tar").is_file():
            tar.add(build_dir / "project.tar", arcname="project.tar")
    artifact.with_suffix(".partial").rename(artifact)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(staging)
    return {**_artifact_result(artifact, manifest, tool_dir), "changed": True}


def _artifact_result(artifact: Path, manifest: dict[str, Any], tool_dir: Path) -> dict[str, Any]:
    """The artifact, its manifest, and the kit's tool wheels for the same platform, which
    travel to a host only when it lacks them."""
    return {
        "artifact": str(artifact),
        "manifest": manifest,
        "tools": {name: str(tool_dir / wheel) for name, wheel in manifest["tools"].items()},
    }


def _find_wheel(directory: Path, requirement: Requirement) -> Path | None:
    for path in sorted(directory.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        if name == canonicalize_name(requirement.name) and requirement.specifier.contains(version):
            return path
    return None


def fetch_wheels(
    pins: list[Pin], dest: Path, store: Path, platform: dict[str, Any], index_env: dict[str, str]
) -> None:
    """Puts the wheel of each pin into `dest`: from the controller's store of wheels for this
    platform when one there matches a hash the lock gives, else downloaded (pip checks the
    hash) into the store first. Code-only releases so download nothing."""
    _ensure(store)

    def stored(pin: Pin) -> Path | None:
        for path in store.glob("*.whl"):
            name, version, _, _ = parse_wheel_filename(path.name)
            same = name == pin.name and str(version) == str(Version(pin.version))
            if same and f"sha256:{sha256_file(path)}" in pin.hashes:
                return path
        return None

    missing = [pin for pin in pins if stored(pin) is None]
    if missing:
        listing = dest.parent / "download.txt"
        listing.write_text("".join(pin.line() + "\n" for pin in missing))
        download(listing, store, platform, index_env, "the app's locked dependencies")
    for pin in pins:
        path = stored(pin)
        if path is None:
            raise BuildError(
                f"{VARIABLE}: no wheel of {pin.name}=={pin.version} matching its lock's hashes "
                "was downloaded."
            )
        shutil.copy2(path, dest / path.name)


def _wheel_version(filename: str) -> str:
    return filename.split("-")[1]


def download(
    requirements: Path,
    dest: Path,
    platform: dict[str, Any],
    index_env: dict[str, str],
    what: str,
    hashed: bool = True,
) -> None:
    """pip download of exactly these pins, as wheels for the host's Python and platform tags."""
    argv = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--dest", str(dest), "--implementation", platform["implementation"],
        "--python-version", platform["python"],
        *[f"--abi={abi}" for abi in platform["abis"]],
        *[f"--platform={tag}" for tag in platform["platforms"]],
        "-r", str(requirements),
    ]  # fmt: skip
    if hashed:
        argv.insert(5, "--require-hashes")
    result = subprocess.run(
        argv, env={**os.environ, **index_env}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        message = tail(result.stderr, 20)
        if "DO NOT MATCH THE HASHES" in result.stderr or "hash" in message.lower():
            raise BuildError(
                f"{VARIABLE}: a download of {what} does not match the hash its lock gives, so nothing was "
                f"installed: {message}"
            )
        raise BuildError(
            f"{VARIABLE}: {what} have no wheel for Python {platform['python']} "
            f"on {platform['platforms'][0]}, "
            f"or the index cannot be reached: {message}"
        )
