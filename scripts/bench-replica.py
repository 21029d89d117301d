#!/usr/bin/env python3
"""Replicated databases between two real nodes over loopback (release build).

Node A writes ROWS rows (default 100,000; batches of 5,000 through POST /db/bench/batch, keys
of 12 bytes, values of VALUE bytes, default 100) into collection `rows` of database `bench`,
shared by syncgroup `bench/sg` whose writers are A and B. An empty node B then starts,
bootstraps from A and joins through A's listen address; the script times from the join until
B's `tributary_replica_records_applied_total` counts every row, and reads the loopback
interface's byte counter around that (each byte sent on lo is received once), over the rows'
payload (key + value bytes).

Then it measures write-to-arrival latency: WRITES (default 1,000) single-row PUTs on A, one
at a time, each timed from just before the PUT until a GET on B (polled back to back) returns
the value; prints the median and the 99th percentile.

Not part of CI: `cargo build --release --bin tributary && python3 scripts/bench-replica.py`
(ROWS=20000 WRITES=200 for a quick run).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tributary")
ROWS = int(os.environ.get("ROWS", "100000"))
WRITES = int(os.environ.get("WRITES", "1000"))
VALUE = int(os.environ.get("VALUE", "100"))
BATCH = 5000
TIMEOUT = float(os.environ.get("TIMEOUT", "900"))


def request(method, api, path, body=None):
    req = urllib.request.Request(f"http://{api}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ok(method, api, path, body=None):
    status, text = request(method, api, path, body)
    if not 200 <= status < 300:
        sys.exit(f"{method} {path}: {status} {text[:300]!r}")
    return text


def metric(api, name):
    for line in ok("GET", api, "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def scan(api, path):
    """Every row of a scan, page by page (`x-tributary-more`, `after` = the last key)."""
    rows, after = [], None
    while True:
        url = f"http://{api}{path}" + (f"&after={urllib.parse.quote(after)}" if after else "")
        with urllib.request.urlopen(url, timeout=120) as r:
            page = json.loads(r.read())
            more = r.headers.get("x-tributary-more") == "true"
        rows += page
        if not more or not page:
            return rows
        after = page[-1]["key"]


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lo_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    raise RuntimeError("no loopback interface in /proc/net/dev")


def start_node(data, bootnode=None):
    try:
        os.remove(os.path.join(data, "node.json"))
    except FileNotFoundError:
        pass
    args = [BIN, "node", "--data-dir", data, "--api", "127.0.0.1:0",
            "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]
    if bootnode:
        args += ["--bootnode", bootnode]
    log = open(data + ".log", "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    deadline = time.time() + 120
    node_file = os.path.join(data, "node.json")
    while not os.path.exists(node_file):
        if proc.poll() is not None or time.time() > deadline:
            sys.exit(f"node on {data} did not start; see {data}.log")
        time.sleep(0.05)
    time.sleep(0.05)
    with open(node_file) as f:
        return proc, json.load(f)


def key(i):
    return f"row-{i:08d}"


def value(i):
    return (f"{i:08d}" * (VALUE // 8 + 1))[:VALUE]


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release --bin tributary")
    tmp = tempfile.mkdtemp(prefix="tributary-bench-replica-")
    procs = []
    try:
        a, a_info = start_node(os.path.join(tmp, "a"))
        procs.append(a)
        api_a = a_info["api"]
        # B's id is needed for the ACL before B runs: start it once to make its key.
        b, b_info = start_node(os.path.join(tmp, "b"))
        b.terminate()
        b.wait()
        spec = {"db": "bench", "name": "sg", "collections": ["rows"],
                "writers": [b_info["ethereum"]]}
        ok("POST", api_a, "/syncgroups", json.dumps(spec).encode())
        start = time.time()
        for first in range(0, ROWS, BATCH):
            lines = "".join(
                json.dumps({"op": "put", "collection": "rows", "key": key(i), "value": value(i)}) + "\n"
                for i in range(first, min(first + BATCH, ROWS)))
            ok("POST", api_a, "/db/bench/batch", lines.encode())
        wrote = time.time() - start
        print(f"A wrote {ROWS} rows in {wrote:.1f} s ({ROWS / wrote:,.0f} rows/s, batches of {BATCH})")

        boot = a_info["listen"][0]
        b, b_info = start_node(os.path.join(tmp, "b"), boot)
        procs.append(b)
        api_b = b_info["api"]
        lo_before = lo_bytes()
        cpu_before = (cpu_seconds(a.pid), cpu_seconds(b.pid))
        start = time.time()
        ok("POST", api_b, "/syncgroups/bench/sg/join", json.dumps({"admin": boot}).encode())
        while metric(api_b, "tributary_replica_records_applied_total") < ROWS:
            if time.time() - start > TIMEOUT:
                sys.exit(f"B did not converge within {TIMEOUT} s")
            time.sleep(0.05)
        took = time.time() - start
        cpu = (cpu_seconds(a.pid) - cpu_before[0], cpu_seconds(b.pid) - cpu_before[1])
        lo = lo_bytes() - lo_before
        payload = sum(len(key(i)) + VALUE for i in range(ROWS))
        rows = scan(api_b, "/db/bench/rows?prefix=row-")
        assert len(rows) == ROWS, f"B holds {len(rows)} rows"
        print(f"B joined and converged in {took:.2f} s: {ROWS / took:,.0f} records/s applied; "
              f"loopback {lo:,} bytes over {payload:,} payload bytes = {lo / payload:.2f}x")
        print(f"CPU during the join and sync (user + system): A {cpu[0]:.2f} s, B {cpu[1]:.2f} s")

        latencies = []
        for n in range(WRITES):
            path = f"/db/bench/rows/latency-{n:05d}"
            body = f"write {n}".encode()
            t0 = time.perf_counter()
            ok("PUT", api_a, path, body)
            while True:
                status, got = request("GET", api_b, path)
                if status == 200 and got == body:
                    break
                if time.perf_counter() - t0 > 30:
                    sys.exit(f"write {n} did not arrive within 30 s")
            latencies.append(time.perf_counter() - t0)
        latencies.sort()
        median = latencies[len(latencies) // 2] * 1000
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        print(f"write on A to arrival on B over {WRITES} writes: median {median:.1f} ms, "
              f"p99 {p99:.1f} ms")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
