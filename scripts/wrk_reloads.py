"""wrk under reloads: POSTs a JSON body over TLS to an app host's published 127.0.0.1 port
with wrk (32 connections by default) while `systemctl reload <service>` runs in its container
a few times, a few seconds apart, then prints what wrk counted, and one RESULT line:

    .venv/bin/python scripts/wrk_reloads.py --port 8443 --container asgikit-demo

Every non-2xx answer is split by who gave it: the app (JSON) or the proxy in front of it
(nginx's 502 page). Exit status 0 only when no answer came from anything but the app, wrk
saw no socket error, and every reload returned 0. Only 127.0.0.1 is addressed, and wrk runs
for a fixed time (steady seconds + reloads x interval + steady seconds). A request is a
timeout only after 30 s (wrk's default of 2 s would count slow answers as errors).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

LUA = Path(__file__).resolve().parent / "wrk" / "count_answers.lua"
RESULT = re.compile(r"^RESULT (.*)$", re.MULTILINE)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True, help="the 127.0.0.1 port nginx serves HTTPS on")
    parser.add_argument("--container", required=True, help="the app host's container (docker exec)")
    parser.add_argument("--service", default="refapp", help="the app's systemd service (default refapp)")
    parser.add_argument("--reloads", type=int, default=6, help="reloads to send (default 6)")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between reloads (default 3)")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds of load before and after them")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--method", default="POST", help="HTTP method (default POST)")
    parser.add_argument("--path", default="/echo", help="path (default /echo, the reference app's echo)")
    parser.add_argument("--body", default='{"message": "hello", "n": 1}', help="JSON body")
    args = parser.parse_args()

    seconds = round(2 * args.steady + args.reloads * args.interval)
    env = {**os.environ, "WRK_METHOD": args.method, "WRK_PATH": args.path, "WRK_BODY": args.body}
    command = [
        "wrk", "--latency", "--timeout", "30s", "-t", str(args.threads), "-c", str(args.connections),
        "-d", f"{seconds}s", "-s", str(LUA), f"https://127.0.0.1:{args.port}{args.path}",
    ]  # fmt: skip
    plan = f"{args.reloads} x `systemctl reload {args.service}` {args.interval:g} s apart"
    print(
        f"==> {args.method} {args.path} x {args.connections} connections for {seconds} s, {plan}", flush=True
    )
    wrk = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    reload_failures = 0
    time.sleep(args.steady)
    for number in range(1, args.reloads + 1):
        started = time.monotonic()
        reload = subprocess.run(
            ["docker", "exec", args.container, "systemctl", "reload", args.service], check=False
        )
        reload_failures += reload.returncode != 0
        print(f"    reload {number}: exit {reload.returncode}", flush=True)
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    output, _ = wrk.communicate(timeout=seconds + 60)
    print(output, end="")
    match = RESULT.search(output)
    if wrk.returncode != 0 or match is None:
        print(f"wrk failed (exit {wrk.returncode})", file=sys.stderr)
        return 1
    counts = {key: float(value) for key, value in (item.split("=") for item in match.group(1).split())}
    bad = ["non2xx_not_app", "connect_errors", "read_errors", "write_errors", "timeouts"]
    ok = all(counts[key] == 0 for key in bad) and reload_failures == 0 and counts["requests"] > 0
    print(f"{'PASS' if ok else 'FAIL'}: {int(counts['requests'])} requests, "
          f"{int(counts['non2xx_not_app'])} non-2xx not from the app, "
          f"{int(counts['non2xx_app'])} non-2xx from the app, "
          f"{sum(int(counts[key]) for key in bad[1:])} socket errors, "
          f"{reload_failures} failed reloads")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
