"""Load tool: drives HTTPS requests at a 127.0.0.1 port while an operation (any command,
e.g. an ansible-playbook run) runs, then prints totals, failures, retries and p50/p99
latency for the steady state, the operation, and the time after it returned, with the app
versions the responses reported, and per method for the operation.

    .venv/bin/python scripts/load.py --port 8443 --insecure --mixed -- \\
        ansible-playbook -i inventories/demo/hosts.yml playbooks/reload.yml

By default it GETs --path (any app). --mixed sends every method to the reference app's
endpoints (GET and HEAD /readyz, POST /echo, PUT, PATCH and DELETE /items/KEY) and runs
WebSocket sessions on /ws that reconnect after a 1012 close. POST and PATCH are never sent
twice; a retry of another method is counted in the "retried" column.

Only 127.0.0.1 is ever addressed. The load is bounded: it stops once the operation has
returned and --min-requests were sent during it, after --max-seconds at the latest.
Exit status: 0 when the operation succeeded and no request failed or was retried, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from asgikit_testing.clients import WebSocketSession
from asgikit_testing.load import MIXED, Call, measure, report_rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True, help="the 127.0.0.1 port to load (HTTPS)")
    parser.add_argument(
        "--path", default="/readyz", help="path to GET (default /readyz, which reports the version)"
    )
    parser.add_argument("--mixed", action="store_true", help="every method, and WebSockets (reference app)")
    parser.add_argument("--threads", type=int, default=6, help="concurrent connections (default 6)")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds of load before the operation")
    parser.add_argument(
        "--min-requests", type=int, default=20_000, help="requests to send during the operation"
    )
    parser.add_argument(
        "--after", type=float, default=2.0, help="seconds of load after the operation returned"
    )
    parser.add_argument("--max-seconds", type=float, default=600.0, help="hard limit for the whole run")
    trust = parser.add_mutually_exclusive_group(required=True)
    trust.add_argument("--cacert", type=Path, help="PEM file to verify the server's certificate with")
    trust.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    parser.add_argument("command", nargs="+", help="the operation, after --")
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=args.cacert)
    if not args.cacert:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def client() -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{args.port}", verify=context, timeout=30)

    def operation() -> int:
        return subprocess.run(args.command, check=False).returncode

    def websocket() -> WebSocketSession:
        return WebSocketSession(f"wss://127.0.0.1:{args.port}/ws", context, open_timeout=10)

    run, returncode = measure(
        client,
        operation,
        mix=MIXED if args.mixed else [Call("GET", args.path)],
        threads=args.threads,
        make_websocket=websocket,
        websockets=2 if args.mixed else 0,
        steady_seconds=args.steady,
        min_requests=args.min_requests,
        after_seconds=args.after,
        max_seconds=args.max_seconds,
    )
    print()
    print("\n".join(report_rows(run.phases())))
    print(f"operation exit status: {returncode}")
    failed = sum(result.failed for _, result, _ in run.phases())
    retried = sum(result.retried for _, result, _ in run.phases())
    return 0 if returncode == 0 and failed == 0 and retried == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
