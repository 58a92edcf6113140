"""The controller-side build (roles/asgi_app/module_utils/asgikit_build.py): which sources and
locks it takes, what it refuses and how it says so, and real builds of each project form with
uv and pip against the index."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import asgikit_build as build
from asgikit_testing.projects import (
    PROJECT_FILE,
    git_repository,
    pylock_project,
    requirements_project,
    tamper_hashes,
    uv_workspace,
)

SERVER = ["gunicorn==27.0.1", "uvicorn[standard]==0.54.0", "uvicorn-worker==0.4.0"]
PLATFORM = {
    "python": "3.11",
    "python_full": "3.11.2",
    "implementation": "cp",
    "abis": ["cp311", "abi3", "none"],
    "platforms": ["manylinux_2_36_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"],
    "markers": {
        "implementation_name": "cpython",
        "implementation_version": "3.11.2",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "platform_release": "",
        "platform_version": "",
        "python_full_version": "3.11.2",
        "python_version": "3.11",
        "sys_platform": "linux",
    },
}


def project(directory: Path, dependencies: list[str], requires_python: str = ">=3.11") -> Path:
    directory.mkdir(parents=True)
    (directory / "pyproject.toml").write_text(
        f'[project]\nname = "tiny"\nversion = "0.1.0"\nrequires-python = "{requires_python}"\n'
        f"dependencies = {json.dumps(dependencies)}\n"
        '[build-system]\nrequires = ["hatchling==1.33.0"]\nbuild-backend = "hatchling.build"\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["tiny"]\n'
    )
    (directory / "tiny").mkdir()
    (directory / "tiny" / "__init__.py").write_text("")
    return directory


def build_all(source: Path | str, cache: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    description = build.build_source(str(source), cache, SERVER, "/usr/bin/python3", [], {})
    build.check_python(description, "host1", "/usr/bin/python3", PLATFORM["python_full"])
    return description, build.build_artifact(description, PLATFORM, cache, ["uv==0.13.9"], {})


# --- Sources -----------------------------------------------------------------------------


def test_source_forms_are_told_apart(tmp_path: Path) -> None:
    wheel = tmp_path / "app-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert build.parse_source(str(wheel)).kind == "wheel"
    assert build.parse_source(str(project(tmp_path / "p", []))).kind == "project"
    git = build.parse_source("git+ssh://git@git.example.com/org/shop.git@v2.4.0#subdirectory=backend")
    assert (git.kind, git.location, git.ref, git.subdirectory) == (
        "git",
        "ssh://git@git.example.com/org/shop.git",
        "v2.4.0",
        "backend",
    )
    assert build.parse_source("git+https://git.example.com/shop.git").ref == "HEAD"


@pytest.mark.parametrize(
    "spec",
    [
        "svn+https://svn.example.com/shop/trunk",
        "/nonexistent/app-1.0.0-py3-none-any.whl",
        "https://files.example.com/shop.tar.gz",
        "git+https://git.example.com/shop.git@v1#subdirectory=../../etc",
    ],
)
def test_a_source_that_is_none_of_the_three_forms_is_refused_by_name(spec: str) -> None:
    with pytest.raises(build.BuildError, match="asgi_app_source") as error:
        build.parse_source(spec)
    assert "wheel" in str(error.value) or "leaves the repository" in str(error.value)


def test_a_directory_without_pyproject_is_refused(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match=r"asgi_app_source: the directory .* has no pyproject.toml"):
        build.parse_source(str(tmp_path))


def test_credentials_in_urls_never_reach_messages() -> None:
    assert (
        build.redact("https://user:s3cret@pypi.example.com/simple/") == "https://***@pypi.example.com/simple/"
    )
    with pytest.raises(build.BuildError) as error:
        build.parse_source("svn+https://user:s3cret@svn.example.com/x")
    assert "s3cret" not in str(error.value)


@dataclass
class Witness:
    """A local HTTP server that answers 404 to everything and keeps each request's
    Authorization header, and the argv of every command the build module ran meanwhile."""

    port: int
    authorizations: list[str | None]
    argvs: list[list[str]]


@pytest.fixture
def witness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Witness]:
    seen = Witness(0, [], [])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.authorizations.append(self.headers.get("Authorization"))
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen.port = server.server_port
    real_run = subprocess.run

    def recording_run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        seen.argvs.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(build.subprocess, "run", recording_run)
    yield seen
    server.shutdown()


def test_git_credentials_reach_the_server_but_never_the_command_line_or_the_cache(
    tmp_path: Path, witness: Witness
) -> None:
    """A user:token in a git+https source goes to git as an Authorization header for that
    origin, through the environment: not in argv (which every local user can read in the
    process list), not in the error, not in any file git keeps."""
    seen, argvs = witness.authorizations, witness.argvs
    source = f"git+http://deploy:s3cret%21@127.0.0.1:{witness.port}/app.git@v1"
    with pytest.raises(build.BuildError) as error:
        build.build_source(source, tmp_path / "cache", SERVER, "python", [], {})
    assert "cannot fetch ref 'v1'" in str(error.value)
    assert "s3cret" not in str(error.value)
    assert seen, "git never reached the server"
    assert seen[0] == "Basic " + base64.b64encode(b"deploy:s3cret!").decode()
    assert any("fetch" in argv for argv in argvs)
    assert not [argv for argv in argvs if "s3cret" in " ".join(argv)]
    kept = [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    assert kept, "git kept no files to look in"
    assert not [path for path in kept if b"s3cret" in path.read_bytes()]
    assert build.url_secrets(source) == ["s3cret!", "s3cret%21"]


def test_index_credentials_reach_the_index_but_never_the_command_line_or_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, witness: Witness
) -> None:
    """A user:token in asgi_app_index_url goes to pip through its environment on the
    controller alone: the index gets it, the process list (argv) and the error never do."""
    seen, argvs = witness.authorizations, witness.argvs
    # pip asks this index alone: none of the machine's pip settings, proxies or other indexes.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("asgikit-index-probe==0.0.0\n")
    index = f"http://deploy:s3cret@127.0.0.1:{witness.port}/simple/"
    with pytest.raises(build.BuildError) as error:
        build.download(
            requirements, tmp_path / "wheels", PLATFORM, {"PIP_INDEX_URL": index}, "x", hashed=False
        )
    assert "asgi_app_source" in str(error.value)
    assert "s3cret" not in str(error.value)
    assert seen, "pip never reached the index"
    assert "Basic " + base64.b64encode(b"deploy:s3cret").decode() in seen
    assert argvs, "pip never ran"
    assert not [argv for argv in argvs if "s3cret" in " ".join(argv)]


def test_only_the_secret_of_a_git_url_is_masked_and_the_users_git_settings_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ansible masks a module's no_log values wherever they appear in its result: the user
    beside a password, or ssh's `git`, would mangle every word that holds them."""
    assert build.url_secrets("git+ssh://git@git.example.com/shop.git@v1") == []
    assert build.url_secrets("git+https://oauth2:tok3n@git.example.com/shop.git") == ["tok3n"]
    assert build.url_secrets("git+https://ghp_tok3n@git.example.com/shop.git") == ["ghp_tok3n"]
    assert build.url_secrets("git+https://git.example.com/shop.git") == []
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "http.sslCAInfo")
    url, env = build.credentials("https://u:p@[2001:db8::1]:8443/shop.git")
    assert url == "https://[2001:db8::1]:8443/shop.git"
    assert env == {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_1": "http.https://[2001:db8::1]:8443/.extraHeader",
        "GIT_CONFIG_VALUE_1": "Authorization: Basic " + base64.b64encode(b"u:p").decode(),
    }
    assert build.credentials("ssh://git@git.example.com/shop.git") == (
        "ssh://git@git.example.com/shop.git",
        {},
    )


# --- Locks -------------------------------------------------------------------------------


def test_a_project_without_a_lock_is_refused_with_how_to_lock_it(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="has no lock") as error:
        build.find_lock(project(tmp_path / "p", ["fastapi==0.165.0"]))
    assert "uv lock" in str(error.value)


def test_a_workspace_member_finds_the_lock_at_the_workspace_root(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["services/*"]\n')
    (tmp_path / "uv.lock").write_text("version = 1\n")
    member = project(tmp_path / "services" / "api", [])
    lock = build.find_lock(member)
    assert (lock.kind, lock.path, lock.root) == ("uv", tmp_path / "uv.lock", tmp_path)


def test_an_unrelated_uv_lock_above_the_project_is_not_its_lock(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "1"\n')
    (tmp_path / "uv.lock").write_text("version = 1\n")
    with pytest.raises(build.BuildError, match="has no lock"):
        build.find_lock(project(tmp_path / "api", []))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fastapi>=0.100 --hash=sha256:00\n", "is not pinned to one version"),
        ("fastapi==0.165.0\n", "fastapi has no --hash"),
        ("-r other.txt\n", "not supported in a lock"),
    ],
)
def test_requirement_lines_that_are_not_locked_are_refused_with_their_line(text: str, message: str) -> None:
    with pytest.raises(build.BuildError, match=message) as error:
        build.parse_requirements(text, "requirements.txt")
    assert "requirements.txt: line 1" in str(error.value)


def test_requirements_keep_markers_and_hashes() -> None:
    pins, local = build.parse_requirements(
        "uvloop==0.23.0 ; sys_platform != 'win32' \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "./libs/common\n",
        "lock",
    )
    assert pins == [build.Pin("uvloop", "0.23.0", ("sha256:aa", "sha256:bb"), 'sys_platform != "win32"')]
    assert local == ["./libs/common"]
    assert pins[0].applies(PLATFORM["markers"])
    assert not pins[0].applies({**PLATFORM["markers"], "sys_platform": "win32"})


def test_a_requirements_lock_out_of_date_with_pyproject_is_refused(tmp_path: Path) -> None:
    directory = project(tmp_path / "p", ["fastapi==0.165.0", "idna>=3"])
    (directory / "requirements.txt").write_text("idna==2.10 --hash=sha256:00\n")
    with pytest.raises(build.BuildError, match="out of date") as error:
        build.locked_pins(build.read_project(directory), build.find_lock(directory))
    assert "fastapi is not in it" in str(error.value)
    assert "idna is pinned to 2.10, outside '>=3'" in str(error.value)


def test_a_python_the_app_excludes_is_refused_naming_both_versions() -> None:
    description = {"name": "shop", "version": "2.0.0", "requires_python": ">=3.12"}
    with pytest.raises(build.BuildError) as error:
        build.check_python(description, "app1", "/usr/bin/python3", "3.11.2")
    assert "requires Python >=3.12" in str(error.value)
    assert "app1's /usr/bin/python3 is Python 3.11.2" in str(error.value)


# --- Real builds (uv and pip against the index) ------------------------------------------


def test_a_uv_workspace_member_builds_one_artifact_with_its_files_and_locked_wheels(tmp_path: Path) -> None:
    member = uv_workspace(tmp_path / "ws", "1.1.0")
    description, artifact = build_all(member, tmp_path / "cache")
    assert description["lock"]["path"] == str(tmp_path / "ws" / "uv.lock")
    manifest = artifact["manifest"]
    assert manifest["distributions"]["refapp"] == "1.1.0"
    assert manifest["runtime"]["packages"]["uvicorn"] == "0.54.0"
    with tarfile.open(artifact["artifact"]) as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read().decode().splitlines()  # type: ignore[union-attr]
        with tarfile.open(fileobj=tar.extractfile("project.tar")) as project_tar:  # type: ignore[arg-type]
            assert PROJECT_FILE in project_tar.getnames()
    assert all("--hash=sha256:" in line for line in requirements)
    assert len([n for n in names if n.startswith("wheels/") and n.endswith(".whl")]) == len(requirements)
    assert any(n.startswith("wheels/uvloop-") and "cp311" in n for n in names)
    # A second build finds everything cached.
    again, artifact_again = build_all(member, tmp_path / "cache")
    assert not again["changed"]
    assert not artifact_again["changed"]
    assert again["release"] == description["release"]


def test_a_stale_uv_lock_is_refused(tmp_path: Path) -> None:
    member = uv_workspace(tmp_path / "ws", "1.1.0")
    pyproject = member / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"fastapi==0.165.0"', '"fastapi==0.165.0", "idna"'))
    with pytest.raises(build.BuildError, match="out of date") as error:
        build_all(member, tmp_path / "cache")
    assert "uv lock" in str(error.value)


def test_a_hash_mismatch_is_refused_before_anything_is_packed(tmp_path: Path) -> None:
    directory = requirements_project(tmp_path / "req", "1.2.0")
    tamper_hashes(directory / "requirements.txt", "idna")
    with pytest.raises(build.BuildError, match="does not match the hash"):
        build_all(directory, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "builds").glob("*/artifact-*.tar"))


def test_requirements_and_pylock_projects_build(tmp_path: Path) -> None:
    for directory in (
        requirements_project(tmp_path / "req", "1.2.0"),
        pylock_project(tmp_path / "pylock", "1.3.0"),
    ):
        description, artifact = build_all(directory, tmp_path / "cache")
        assert artifact["manifest"]["distributions"]["fastapi"] == "0.165.0", description["lock"]
        assert description["lock"]["kind"] in ("requirements", "pylock")


def test_a_git_source_is_checked_out_at_its_ref_on_the_controller(tmp_path: Path) -> None:
    source = git_repository(tmp_path / "repo", "1.4.0", "v1.4.0")
    description, artifact = build_all(source, tmp_path / "cache")
    assert description["source"]["kind"] == "git"
    assert len(description["source"]["commit"]) == 40
    assert artifact["manifest"]["distributions"]["refapp"] == "1.4.0"
    with pytest.raises(build.BuildError, match="cannot fetch ref 'v9'"):
        build.build_source(source.replace("@v1.4.0", "@v9"), tmp_path / "cache", SERVER, "python", [], {})


def test_a_project_whose_python_no_host_has_builds_and_is_refused_per_host(tmp_path: Path) -> None:
    # uv must build with the controller's Python, never fetch one that requires-python names.
    directory = requirements_project(tmp_path / "req", "1.5.0")
    pyproject = directory / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('requires-python = ">=3.11"', 'requires-python = ">=3.14"')
    )
    description = build.build_source(str(directory), tmp_path / "cache", SERVER, "/usr/bin/python3", [], {})
    with pytest.raises(build.BuildError, match=r"requires Python >=3\.14"):
        build.check_python(description, "app1", "/usr/bin/python3", "3.11.2")


def test_a_change_in_a_sibling_workspace_member_makes_a_new_release(tmp_path: Path) -> None:
    member = uv_workspace(tmp_path / "ws", "1.1.0")
    first = build.build_source(str(member), tmp_path / "cache", SERVER, "/usr/bin/python3", [], {})
    (tmp_path / "ws" / "libs").mkdir()
    (tmp_path / "ws" / "libs" / "shared.py").write_text("CHANGED = True\n")
    second = build.build_source(str(member), tmp_path / "cache", SERVER, "/usr/bin/python3", [], {})
    assert second["release"] != first["release"]


def test_the_release_key_covers_code_the_release_does_not_carry(tmp_path: Path) -> None:
    member = uv_workspace(tmp_path / "ws", "1.1.0")
    carried = ["settings"]
    first = build.build_source(str(member), tmp_path / "cache", SERVER, "/usr/bin/python3", carried, {})
    main = member / "src" / "refapp" / "main.py"
    main.write_text(main.read_text() + "\n# changed\n")
    second = build.build_source(str(member), tmp_path / "cache", SERVER, "/usr/bin/python3", carried, {})
    assert second["release"] != first["release"]


def test_local_settings_files_never_travel(tmp_path: Path) -> None:
    directory = project(tmp_path / "p", [])
    for name in (".env", ".env.production", ".envrc", "alembic.ini"):
        (directory / name).write_text("SECRET=1\n")
    names = {path.name for path in build.project_files(directory, [])}
    assert "alembic.ini" in names
    assert not names & {".env", ".env.production", ".envrc"}


def test_a_forked_lock_keeps_each_pin_under_its_marker(tmp_path: Path) -> None:
    directory = project(tmp_path / "p", ["numpy>=1"])
    (directory / "requirements.txt").write_text(
        "numpy==1.26.4 ; python_version < '3.12' --hash=sha256:aa\n"
        "numpy==2.2.0 ; python_version >= '3.12' --hash=sha256:bb\n"
    )
    pins, _ = build.locked_pins(build.read_project(directory), build.find_lock(directory))
    chosen = [pin.version for pin in pins if pin.applies(PLATFORM["markers"])]
    assert chosen == ["1.26.4"]
    assert len(pins) == 2


def test_pylock_toml_is_preferred_to_other_pylock_files(tmp_path: Path) -> None:
    directory = project(tmp_path / "p", [])
    (directory / "pylock.dev.toml").write_text("")
    (directory / "pylock.toml").write_text("")
    assert build.find_lock(directory).path == directory / "pylock.toml"
