"""The kit's benchmark: what the deployed stack serves on the demo host, against the same
release served by simpler stacks, in one run, each variant taken in turn.

    make demo && make bench            # or: .venv/bin/python scripts/bench.py --help

The variants run on the demo container (asgikit-demo), from the release the demo serves, as
the app user with its environment: naive uvicorn (asyncio, h11) and uvicorn[standard] in one
process, gunicorn on TCP with 1, cores, 2 x cores + 1 and 4 x cores Uvicorn workers, a
minimal nginx TLS proxy (no logs, no headers) to the kit's gunicorn socket, the deployed
stack's own nginx configuration less one thing at a time (its access log, its per-client
limit, the response headers it adds) or with ssl_buffer_size 4k, each on an nginx of its own,
and the deployed stack itself (nginx, TLS, the kit's gunicorn). Debian's wrk, on this machine, loads each one
at the container's address (the demo's own network, no port forwarding in between) on four
endpoints: a tiny JSON answer, a large gzip'd one, an async one that awaits 10 ms, and a
sync one that burns about 1 ms of CPU. Rounds take the variants in turns; the table gives
each one's median requests/s, its p50 and p99 latency, and its ratio to the deployed stack.
The same goes to .cache/bench/bench-<time>.json. With --deploys, it also times a code-only
deploy.yml on the demo host and a site.yml run that changes nothing. Last, the app alone,
in-process (scripts/app_profile.py): its CPU time per request of each endpoint, against what a
request costs the machine in the stack, and for a large payload what its JSON encoding and its
gzip take.

The load generator shares the machine's cores with the server, so compare ratios measured
in one run, not figures between runs or machines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from asgikit_testing.wheels import build_wheel  # noqa: E402

CONTAINER = "asgikit-demo"
APP = "refapp"
INVENTORY = "inventories/demo/hosts.yml"
UNIT_PREFIX = "asgikit-bench-"
BENCH_DIR = "/run/asgikit-bench"
PYTHON = f"/opt/{APP}/current/venv/bin/python"
MODULE = "refapp.main:app"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    headers: tuple[str, ...] = ()
    # Its rate is bound by the CPU it takes (not by a wait, as the async one's is).
    cpu_bound: bool = True


STACK_PORT = 443
STACK_NAME = "the deployed stack (nginx, TLS, the kit's gunicorn)"
ENDPOINTS = (
    Endpoint("tiny JSON", "/healthz"),
    Endpoint("large, gzip'd", "/large", ("Accept-Encoding: gzip",)),
    Endpoint("async, awaits 10 ms", "/io?ms=10", cpu_bound=False),
    Endpoint("sync, 1 ms of CPU", "/cpu?ms=1"),
)


@dataclass(frozen=True)
class Variant:
    name: str
    port: int
    tls: bool
    unit: str | None  # the transient unit that serves it; None: the deployed stack
    command: tuple[str, ...] = ()
    as_app: bool = True


@dataclass
class Sample:
    variant: str
    endpoint: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def docker_exec(*argv: str, check: bool = True) -> str:
    result = subprocess.run(["docker", "exec", CONTAINER, *argv], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed in {CONTAINER}: {result.stderr.strip()}")
    return result.stdout.strip()


def container_address() -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", CONTAINER],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip():
        sys.exit(f"bench: no running {CONTAINER}; run `make demo` first")
    return out.stdout.strip()


def service_property(name: str) -> str:
    return docker_exec("systemctl", "show", f"{APP}.service", "--property", name, "--value")


def variants(cores: int) -> list[Variant]:
    python, module = PYTHON, MODULE
    uvicorn = (python, "-P", "-m", "uvicorn", module, "--host", "0.0.0.0", "--no-access-log")
    found = [
        Variant("uvicorn (asyncio, h11), 1 process", 9001, False, "uvicorn-naive",
                (*uvicorn, "--port", "9001", "--loop", "asyncio", "--http", "h11")),
        Variant("uvicorn[standard], 1 process", 9002, False, "uvicorn-standard",
                (*uvicorn, "--port", "9002", "--loop", "uvloop", "--http", "httptools")),
    ]  # fmt: skip
    for workers in sorted({1, cores, 2 * cores + 1, 4 * cores}):
        port = 9010 + workers
        found.append(
            Variant(
                f"gunicorn on TCP, {workers} workers" + (" (the kit's)" if workers == 2 * cores + 1 else ""),
                port,
                False,
                f"gunicorn-{workers}",
                (
                    python,
                    "-P",
                    "-m",
                    "gunicorn",
                    module,
                    "--worker-class",
                    "uvicorn_worker.UvicornWorker",
                    "--workers",
                    str(workers),
                    "--bind",
                    f"0.0.0.0:{port}",
                    "--no-control-socket",
                ),
            )
        )
    found.append(
        Variant(
            "minimal nginx TLS proxy to the kit's gunicorn",
            9443,
            True,
            "nginx",
            ("nginx", "-c", f"{BENCH_DIR}/nginx.conf", "-g", "daemon off;"),
            as_app=False,
        )
    )
    for number, (name, _) in enumerate(ABLATIONS, start=1):
        found.append(
            Variant(
                f"the stack, {name}",
                9450 + number,
                True,
                f"stack-{number}",
                ("nginx", "-c", f"{BENCH_DIR}/stack-{number}/nginx.conf", "-g", "daemon off;"),
                as_app=False,
            )
        )
    found.append(Variant(STACK_NAME, STACK_PORT, True, None))
    return found


# The deployed nginx configuration less one thing, each served by an nginx of its own on
# another port, to tell what each costs: (what is left out, how the site file is edited).
ABLATIONS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("no access log", lambda site: re.sub(r"\n\s*access_log [^;]*;", "\n    access_log off;", site)),
    ("no per-client limit", lambda site: re.sub(r"\n\s*limit_conn [^;]*;", "", site)),
    (
        "no response headers added",
        lambda site: re.sub(r"\n\s*add_header [^;]*;", "", site),
    ),
    ("no forwarding headers cleared", lambda site: re.sub(r'\n\s*proxy_set_header [\w-]+ "";', "", site)),
    (
        "ssl_buffer_size 4k",
        lambda site: site.replace("ssl_certificate ", "ssl_buffer_size 4k;\n    ssl_certificate ", 1),
    ),
)


def ablated_configs(port_of: Callable[[int], int]) -> dict[str, str]:
    """The files of each ablation's nginx: the deployed nginx.conf, with its own pid and error
    log, no status server, and the edited site alone, its HTTPS server on the ablation's port
    and its HTTP redirect left out. Paths relative to BENCH_DIR."""
    main = docker_exec("cat", "/etc/nginx/nginx.conf")
    site = docker_exec("cat", f"/etc/nginx/sites-available/{APP}.conf")
    site = re.sub(r"\n# Plain HTTP only redirects to HTTPS.\nserver \{.*?\n\}\n", "\n", site, flags=re.S)
    site = re.sub(r"\n\s*listen \[::\][^;]*;", "", site)
    files = {}
    for number, (_, edit) in enumerate(ABLATIONS, start=1):
        directory = f"{BENCH_DIR}/stack-{number}"
        mine = re.sub(r"listen \d+ ssl", f"listen {port_of(number)} ssl", edit(site), count=1)
        conf = re.sub(r"(?m)^pid .*$", f"pid {directory}/nginx.pid;", main)
        conf = re.sub(r"(?m)^error_log .*$", f"error_log {directory}/error.log;", conf)
        conf = re.sub(r"\n\s*server \{\n\s*listen 127\.0\.0\.1:.*?\n    \}\n", "\n", conf, flags=re.S)
        conf = conf.replace("include /etc/nginx/sites-enabled/*;", f"include {directory}/site.conf;")
        conf = conf.replace("/var/log/nginx/", f"{directory}/")
        mine = mine.replace("/var/log/nginx/", f"{directory}/")
        files[f"stack-{number}/nginx.conf"], files[f"stack-{number}/site.conf"] = conf, mine
    return files


MINIMAL_NGINX = """
user www-data;
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream app {{ server unix:{socket}; keepalive 32; }}
    server {{
        listen 9443 ssl;
        ssl_certificate /etc/nginx/tls/{app}.crt;
        ssl_certificate_key /etc/nginx/tls/{app}.key;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""


def as_the_app() -> list[str]:
    """systemd-run's properties that run a command as the app's service does: its user and
    group, its environment file and its working directory."""
    return [
        f"--property=User={APP}",
        f"--property=Group={APP}",
        f"--property=EnvironmentFile={service_property('EnvironmentFiles').split()[0]}",
        f"--property=WorkingDirectory=-{service_property('WorkingDirectory').lstrip('!-')}",
    ]


def app_profile(endpoints: list[Endpoint], rows: list[dict[str, object]]) -> dict[str, object]:
    """scripts/app_profile.py with the release's python, as the app: the app's own CPU time per
    request of each CPU-bound endpoint, and how many cores that takes at the rate the
    deployed stack served (the rest of the machine's cores went to nginx, TLS, gunicorn,
    uvicorn's HTTP and wrk)."""
    chosen = [e for e in endpoints if e.cpu_bound]
    if not chosen:
        return {}
    script = (REPO / "scripts" / "app_profile.py").read_text()
    argv = ["docker", "exec", "-i", CONTAINER, "systemd-run", "--wait", "--pipe", "--quiet", *as_the_app(),
            "--", PYTHON, "-P", "-", MODULE, *(e.path for e in chosen)]  # fmt: skip
    result = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"app_profile.py failed: {result.stderr[-2000:]}")
    found = json.loads(result.stdout)
    print("\nthe app alone, in-process: CPU ms per request, and the cores that takes at the stack's rate")
    for endpoint in chosen:
        mine = found[endpoint.path]
        stack = next(r for r in rows if r["endpoint"] == endpoint.name and r["variant"] == STACK_NAME)
        mine["cores at the stack's rate"] = round(
            mine["request"] * float(stack["requests_per_second"]) / 1000, 2
        )  # type: ignore[arg-type]
        parts = ", ".join(f"{key} {value}" for key, value in mine.items() if key != "request")
        print(f"  {endpoint.name:<24}{mine['request']:>7.3f}; {parts}")
    return found


def start(variant: Variant, address: str) -> None:
    assert variant.unit is not None
    unit = UNIT_PREFIX + variant.unit
    docker_exec("systemctl", "stop", unit, check=False)
    properties = ["--property=KillMode=mixed", "--collect"]
    if variant.as_app:
        properties += as_the_app()
    docker_exec("systemd-run", f"--unit={unit}", *properties, "--", *variant.command)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((address, variant.port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"bench: {variant.name} did not listen on {variant.port} within 60 s")
            time.sleep(0.5)


def stop_all() -> None:
    units = docker_exec("systemctl", "list-units", "--plain", "--no-legend", f"{UNIT_PREFIX}*", check=False)
    for line in units.splitlines():
        docker_exec("systemctl", "stop", line.split()[0], check=False)


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * UNITS[unit]


def wrk(url: str, endpoint: Endpoint, seconds: int, connections: int) -> tuple[float, float, float, int, int]:
    headers = ["-H", "Host: localhost"] + [arg for header in endpoint.headers for arg in ("-H", header)]
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *headers, url + endpoint.path]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    found = [
        re.search(pattern, out, re.M)
        for pattern in (r"Requests/sec:\s+([0-9.]+)", r"^\s+50%\s+(\S+)\s*$", r"^\s+99%\s+(\S+)\s*$")
    ]
    if not all(found):
        sys.exit(f"bench: wrk's output for {url + endpoint.path} has no rate or latencies:\n{out}")
    rate, p50, p99 = float(found[0].group(1)), _ms(found[1].group(1)), _ms(found[2].group(1))  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    return rate, p50, p99, non_2xx, socket_errors


def median_rows(samples: list[Sample]) -> list[dict[str, object]]:
    rows = []
    keys = dict.fromkeys((s.endpoint, s.variant) for s in samples)
    for endpoint, variant in keys:
        mine = [s for s in samples if (s.endpoint, s.variant) == (endpoint, variant)]
        rows.append(
            {
                "endpoint": endpoint,
                "variant": variant,
                "requests_per_second": statistics.median(s.requests_per_second for s in mine),
                "p50_ms": statistics.median(s.p50_ms for s in mine),
                "p99_ms": statistics.median(s.p99_ms for s in mine),
                "non_2xx": sum(s.non_2xx for s in mine),
                "socket_errors": sum(s.socket_errors for s in mine),
                "rounds": len(mine),
            }
        )
    stack = {r["endpoint"]: r["requests_per_second"] for r in rows if r["variant"].startswith("the deployed")}
    for row in rows:
        row["vs_stack"] = (
            row["requests_per_second"] / stack[row["endpoint"]] if stack.get(row["endpoint"]) else None
        )
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    width = max(len(str(r["variant"])) for r in rows) + 2
    for endpoint in dict.fromkeys(r["endpoint"] for r in rows):
        print(f"\n{endpoint}")
        print(f"  {'variant':<{width}}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs stack':>10}{'errors':>8}")
        for r in (r for r in rows if r["endpoint"] == endpoint):
            ratio = f"{r['vs_stack']:.2f}x" if r["vs_stack"] is not None else "-"
            errors = int(r["non_2xx"]) + int(r["socket_errors"])  # type: ignore[call-overload]
            print(
                f"  {r['variant']!s:<{width}}{r['requests_per_second']:>10.0f}{r['p50_ms']:>9.2f}"
                f"{r['p99_ms']:>9.2f}{ratio:>10}{errors:>8}"
            )


def ansible(*argv: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env |= {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    started = time.monotonic()
    result = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", INVENTORY, *argv],
                            cwd=REPO, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"bench: ansible-playbook {' '.join(argv)} failed:\n{result.stdout[-3000:]}")
    return time.monotonic() - started


def deploy_speed() -> dict[str, float]:
    """A code-only deploy.yml of a new version on the demo host (after one to warm the
    caches), a site.yml run that changes nothing, then the demo's own release back."""
    stamp = time.strftime("%H%M%S")
    with tempfile.TemporaryDirectory() as scratch:
        warm, new = (build_wheel(Path(scratch), f"1.0.{n}+b{stamp}") for n in (1, 2))
        print("==> bench: deploy speed: warming the caches with one release", flush=True)
        ansible("playbooks/deploy.yml", "-e", f"asgi_app_source={warm}")
        code_only = ansible("playbooks/deploy.yml", "-e", f"asgi_app_source={new}")
        unchanged = ansible("site.yml", "-e", f"asgi_app_source={new}")
    print("==> bench: deploy speed: the demo's release back", flush=True)
    ansible("site.yml")
    return {"code-only deploy.yml, one host (s)": code_only, "site.yml that changes nothing (s)": unchanged}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="each measurement's length (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every variant (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk's connections (default 64)")
    parser.add_argument("--deploys", action="store_true", help="also time a code-only deploy and a no-op run")
    parser.add_argument(
        "--endpoint", action="append", default=[], help="only the endpoints whose name has this (repeatable)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="only the variants whose name has this, and the deployed stack (repeatable)",
    )
    args = parser.parse_args()
    endpoints = [e for e in ENDPOINTS if not args.endpoint or any(w in e.name for w in args.endpoint)]
    if not endpoints:
        parser.error(f"--endpoint: none of {[e.name for e in ENDPOINTS]} has {args.endpoint}")

    address = container_address()
    cores = int(docker_exec("nproc"))
    socket_path = docker_exec(
        "systemctl", "show", f"{APP}.socket", "--property", "Listen", "--value"
    ).split()[0]
    docker_exec("install", "-d", "-m", "0755", BENCH_DIR)
    files = {"nginx.conf": MINIMAL_NGINX.format(dir=BENCH_DIR, socket=socket_path, app=APP)}
    files |= ablated_configs(lambda number: 9450 + number)
    for name, content in files.items():
        target = f"{BENCH_DIR}/{name}"
        write = f"mkdir -p $(dirname {target}) && cat > {target}"
        subprocess.run(
            ["docker", "exec", "-i", CONTAINER, "sh", "-c", write], input=content, text=True, check=True
        )
    chosen = [
        v
        for v in variants(cores)
        if v.port == STACK_PORT or not args.variant or any(w in v.name for w in args.variant)
    ]
    if args.variant and len(chosen) == 1:
        parser.error(f"--variant: no variant but the deployed stack has {args.variant}")
    plan = f"{len(chosen)} variants x {len(endpoints)} endpoints x {args.rounds} rounds of {args.seconds} s"
    print(
        f"==> bench: {CONTAINER} ({address}), {cores} cores; {plan}, wrk -t1 -c{args.connections}", flush=True
    )
    samples: list[Sample] = []
    try:
        for variant in chosen:
            if variant.unit is not None:
                start(variant, address)
        # Every worker booted and warm (imports, first connections) before anything counts.
        for variant in chosen:
            wrk(
                f"{'https' if variant.tls else 'http'}://{address}:{variant.port}",
                endpoints[0],
                2,
                args.connections,
            )
        for number in range(1, args.rounds + 1):
            print(f"==> bench: round {number} of {args.rounds}", flush=True)
            for endpoint in endpoints:
                for variant in chosen:
                    url = f"{'https' if variant.tls else 'http'}://{address}:{variant.port}"
                    rate, p50, p99, non_2xx, errors = wrk(url, endpoint, args.seconds, args.connections)
                    samples.append(Sample(variant.name, endpoint.name, rate, p50, p99, non_2xx, errors))
    finally:
        stop_all()
    rows = median_rows(samples)
    print_table(rows)
    report: dict[str, object] = {
        "machine": {"cores": cores, "container": CONTAINER},
        "settings": vars(args),
        "medians": rows,
        "samples": [asdict(s) for s in samples],
    }
    out = REPO / ".cache" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def save() -> None:
        path.write_text(json.dumps(report, indent=1))

    save()  # the load figures are kept whatever happens next
    try:
        report["app_in_process"] = app_profile(endpoints, rows)
    except (RuntimeError, ValueError, KeyError) as error:
        report["app_in_process"] = {"error": str(error)}
        print(f"\n==> bench: the app's in-process profile failed: {error}", file=sys.stderr)
    save()
    if args.deploys:
        speeds = deploy_speed()
        report["deploys"] = speeds
        print()
        for name, seconds in speeds.items():
            print(f"  {name:<40}{seconds:>8.1f}")
        save()
    print(f"\n==> bench: saved {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
