"""gunicorn_conf.py as the role renders it: the worker count for several core counts and
overrides, and gunicorn's own check of the file."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

HERE = Path(__file__).resolve().parent
GUNICORN = Path(sys.executable).with_name("gunicorn")


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gunicorn_conf")
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    }
    result = subprocess.run(
        ["ansible-playbook", str(HERE / "render_gunicorn_conf.yml"), "-e", f"out_dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def load(path: Path, environ: dict[str, str] | None = None, cpus: int | None = None) -> dict[str, Any]:
    """Executes the config file as gunicorn does, with exactly `environ`'s WEB_CONCURRENCY
    (none when absent) and, when given, `cpus` usable CPUs."""
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"} | (environ or {})
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": "gunicorn_conf"}
    with mock.patch.dict(os.environ, env, clear=True), contextlib.ExitStack() as stack:
        if cpus is not None:
            stack.enter_context(mock.patch("os.sched_getaffinity", return_value=set(range(cpus))))
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 8, 16, 64])
def test_default_is_two_workers_per_usable_cpu_plus_one(rendered: Path, cpus: int) -> None:
    assert load(rendered / "default.py", cpus=cpus)["workers"] == 2 * cpus + 1


def _workers_under_affinity(path: Path, cpus: set[int]) -> int:
    code = f"__file__ = {str(path)!r}; exec(open(__file__).read()); print(workers)"
    setter: Callable[[], None] = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=setter, env=env, capture_output=True, text=True, check=True
    ).stdout
    return int(out)


def test_real_cpu_affinity_is_honoured(rendered: Path) -> None:
    assert _workers_under_affinity(rendered / "default.py", {0}) == 3
    all_cpus = os.sched_getaffinity(0)
    assert _workers_under_affinity(rendered / "default.py", all_cpus) == 2 * len(all_cpus) + 1


def test_role_variable_fixes_the_count(rendered: Path) -> None:
    assert load(rendered / "fixed.py", cpus=64)["workers"] == 9


@pytest.mark.parametrize("variant", ["default", "fixed"])
def test_web_concurrency_overrides_role_and_cores(rendered: Path, variant: str) -> None:
    assert load(rendered / f"{variant}.py", {"WEB_CONCURRENCY": "7"}, cpus=4)["workers"] == 7


@pytest.mark.parametrize("value", ["0", "-2", "many", "2.5"])
def test_invalid_web_concurrency_is_a_clear_error(rendered: Path, value: str) -> None:
    with pytest.raises(ValueError, match="WEB_CONCURRENCY must be a positive integer"):
        load(rendered / "default.py", {"WEB_CONCURRENCY": value})


def test_settings_are_set_on_purpose(rendered: Path) -> None:
    conf = load(rendered / "default.py", cpus=2)
    assert conf["worker_class"].__name__ == "DrainingUvicornWorker"
    assert conf["worker_class"].__mro__[1].__module__ == "uvicorn_worker._workers"
    assert conf["bind"] == ["unix:/run/refapp/gunicorn.sock"]
    assert conf["wsgi_app"] == "refapp.main:app"
    assert conf["preload_app"] is False
    assert conf["forwarded_allow_ips"] == "*"
    assert conf["accesslog"] is None  # nginx logs each request
    assert conf["errorlog"] == "-"
    assert conf["control_socket"] == "/run/refapp/control/gunicorn.ctl"
    assert conf["graceful_timeout"] == 30
    assert conf["timeout"] == 30
    # nginx's upstream keepalive_timeout is 4 s: the app must hold idle connections longer,
    # and a retiring worker must outlive them.
    assert conf["keepalive"] > 4
    assert conf["graceful_timeout"] > 4
    assert conf["max_requests"] == 10000
    assert conf["max_requests_jitter"] == 1000


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    return subprocess.run(
        [str(GUNICORN), "--check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_gunicorn_check_config_accepts_the_rendered_file(rendered: Path) -> None:
    result = _check_config(rendered / "default.py")
    assert result.returncode == 0, result.stderr


def test_gunicorn_check_config_rejects_an_app_that_does_not_import(rendered: Path) -> None:
    result = _check_config(rendered / "missing_module.py")
    assert result.returncode != 0
    assert "refapp.missing" in result.stderr


def test_gunicorn_reads_workers_and_worker_class_from_the_file(rendered: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    printed = subprocess.run(
        [str(GUNICORN), "--print-config", "--config", str(rendered / "fixed.py")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    settings = {
        name.strip(): value.strip()
        for name, _, value in (line.partition(" = ") for line in printed.splitlines())
        if value
    }
    assert settings["workers"] == "9"
    assert "DrainingUvicornWorker" in settings["worker_class"]


def test_post_fork_pins_sys_path_and_working_directory_to_one_release(
    rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = tmp_path / "releases" / "1"
    (release / "project").mkdir(parents=True)
    link = tmp_path / "current"
    link.symlink_to(release)
    namespace = load(rendered / "default.py")
    assert namespace["RELEASE_LINK"] == "/opt/refapp/current"
    assert namespace["PROJECT_SUBDIR"] == "project"
    namespace["RELEASE_LINK"] = str(link)
    monkeypatch.chdir(tmp_path)
    site = f"{link}/venv/lib/python3/site-packages"
    with mock.patch.object(sys, "path", ["", str(link), site, "/usr/lib/python3", f"{link}x/other"]):
        namespace["post_fork"](None, None)
        assert sys.path == [
            "",
            str(release),
            f"{release}/venv/lib/python3/site-packages",
            "/usr/lib/python3",
            f"{link}x/other",
        ]
    assert Path.cwd() == release / "project"


def test_post_fork_stays_put_in_a_release_without_project_files(
    rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A release from before the kit carried project files: a rollback to it must still serve.
    release = tmp_path / "releases" / "old"
    release.mkdir(parents=True)
    (tmp_path / "current").symlink_to(release)
    namespace = load(rendered / "default.py")
    namespace["RELEASE_LINK"] = str(tmp_path / "current")
    monkeypatch.chdir(tmp_path)
    with mock.patch.object(sys, "path", [str(tmp_path / "current")]):
        namespace["post_fork"](None, None)
        assert sys.path == [str(release)]
    assert Path.cwd() == tmp_path
