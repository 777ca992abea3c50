#!/usr/bin/env python3
"""Container healthcheck for the Cascade image (installed as /usr/local/bin/cascade-healthcheck).

Standard library only, so it works in python:3.11-slim without curl.

    cascade-healthcheck --url http://127.0.0.1:9108/metrics   # HTTP status < 400
    cascade-healthcheck --tcp 127.0.0.1:15020                 # TCP port accepts
    cascade-healthcheck --process notify                      # a process whose argv has this word

Exit 0 when healthy, 1 otherwise (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request


def check_url(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return None if resp.status < 400 else f"{url}: HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        return f"{url}: HTTP {err.code}"
    except (OSError, urllib.error.URLError) as err:
        return f"{url}: {err}"


def check_tcp(hostport: str, timeout: float) -> str | None:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as err:
        return f"{hostport}: {err}"


def check_process(word: str) -> str | None:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if word.encode() in argv and not any(b"healthcheck" in a for a in argv):
            return None
    return f"no process with argument {word!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--url")
    group.add_argument("--tcp", metavar="HOST:PORT")
    group.add_argument("--process", metavar="WORD")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.url:
        problem = check_url(args.url, args.timeout)
    elif args.tcp:
        problem = check_tcp(args.tcp, args.timeout)
    else:
        problem = check_process(args.process)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
