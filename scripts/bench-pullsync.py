#!/usr/bin/env python3
"""Pull-sync between two real nodes over loopback, against the local ingest limit.

Node A holds CHUNKS (default 100,000) leaf chunks of random data (a file of CHUNKS x 4 KiB,
so a few hundred intermediate chunks more); an empty node B bootstraps from A (a two-node
network: depth 0, so B syncs every bin of A) and the script times until B's /reserve holds
every chunk of A. In the same run it times `tributary upload --db` of the same file into an
empty data directory (hash and store every chunk: the path a syncing node is bound by) and
reads the loopback interface's byte counter around the sync.

Then it kills a fresh node B with SIGKILL halfway through a second sync, restarts it (with A
paused, to read what B had committed before syncing resumes), lets it finish, and prints how
many chunks it fetched again that it had committed.

Not part of CI: `python3 scripts/bench-pullsync.py` (CHUNKS=20000 for a quick run).
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tributary")
CHUNKS = int(os.environ.get("CHUNKS", "100000"))
TIMEOUT = float(os.environ.get("TIMEOUT", "900"))


def get(api, path):
    with urllib.request.urlopen(f"http://{api}{path}", timeout=10) as r:
        return r.read().decode()


def reserve(api):
    try:
        return json.loads(get(api, "/reserve"))["chunks"]
    except OSError:
        return None


def metric(api, name):
    for line in get(api, "/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def lo_counters():
    """Bytes and packets received on the loopback interface (each byte sent on lo is
    received once)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                fields = rest.split()
                return int(fields[0]), int(fields[1])
    raise RuntimeError("no loopback interface in /proc/net/dev")


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payload_bytes(leaves, last_leaf):
    """Wire bytes (span + payload) of every chunk of a file of `leaves` chunks, the last one
    `last_leaf` bytes long, with Swarm's rule that a lone last reference is carried up."""
    total = 8 * leaves + 4096 * (leaves - 1) + last_leaf
    refs = leaves
    while refs > 1:
        parents = math.ceil(refs / 128)
        for p in range(parents):
            children = min(128, refs - 128 * p)
            if children > 1 or p == 0:
                total += 8 + 32 * children
        # A lone trailing child is not wrapped: it stays a reference one level up.
        refs = parents
    return total


def start_node(data, api_file, bootnode=None):
    try:
        os.remove(os.path.join(data, "node.json"))
    except FileNotFoundError:
        pass
    args = [BIN, "node", "--data-dir", data, "--api", "127.0.0.1:0",
            "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]
    if bootnode:
        args += ["--bootnode", bootnode]
    log = open(os.path.join(os.path.dirname(data), os.path.basename(data) + ".log"), "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    deadline = time.time() + 120
    node_file = os.path.join(data, "node.json")
    while not os.path.exists(node_file):
        if proc.poll() is not None or time.time() > deadline:
            sys.exit(f"node on {data} did not start; see {log.name}")
        time.sleep(0.05)
    time.sleep(0.05)
    with open(node_file) as f:
        info = json.load(f)
    return proc, info


def wait_for(api, want, label):
    start = time.time()
    last = 0
    while True:
        n = reserve(api) or 0
        if n >= want:
            return time.time() - start
        if time.time() - start > TIMEOUT:
            sys.exit(f"{label}: {n} of {want} chunks after {TIMEOUT} s")
        if n // 10000 != last // 10000:
            print(f"  {label}: {n} of {want} chunks", file=sys.stderr)
        last = n
        time.sleep(0.1)


def main():
    subprocess.run(["cargo", "build", "--release", "--bin", "tributary"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="bench-pullsync-")
    procs = []
    try:
        file = os.path.join(tmp, "file")
        with open(file, "wb") as f:
            for _ in range(CHUNKS):
                f.write(os.urandom(4096))
        payload = payload_bytes(CHUNKS, 4096)

        start = time.time()
        subprocess.run([BIN, "upload", file, "--db", os.path.join(tmp, "local")],
                       check=True, stdout=subprocess.DEVNULL)
        ingest_s = time.time() - start
        shutil.rmtree(os.path.join(tmp, "local"))

        subprocess.run([BIN, "upload", file, "--db", os.path.join(tmp, "a")],
                       check=True, stdout=subprocess.DEVNULL)
        a, a_info = start_node(os.path.join(tmp, "a"), "a")
        procs.append(a)
        total = reserve(a_info["api"])
        boot = a_info["listen"][0]

        lo_before = lo_counters()
        start = time.time()
        b, b_info = start_node(os.path.join(tmp, "b"), "b", boot)
        procs.append(b)
        a_cpu = cpu_seconds(a.pid)
        wait_for(b_info["api"], total, "sync")
        sync_s = time.time() - start
        a_cpu, b_cpu = cpu_seconds(a.pid) - a_cpu, cpu_seconds(b.pid)
        lo_after = lo_counters()
        wire, packets = lo_after[0] - lo_before[0], lo_after[1] - lo_before[1]
        b.send_signal(signal.SIGINT)
        b.wait(timeout=60)

        mb = payload / 1e6
        print(f"A holds {total} chunks ({mb:.1f} MB of span+payload)")
        print(f"local ingest (tributary upload --db, hash + store): {ingest_s:.2f} s, "
              f"{total / ingest_s:,.0f} chunks/s, {mb / ingest_s:.1f} MB/s")
        print(f"pull-sync A -> B over loopback: {sync_s:.2f} s, {total / sync_s:,.0f} chunks/s, "
              f"{mb / sync_s:.1f} MB/s = {ingest_s / sync_s:.0%} of the local ingest rate")
        print(f"CPU during the sync: A {a_cpu:.2f} s, B {b_cpu:.2f} s "
              f"({(a_cpu + b_cpu) / sync_s:.2f} of {os.cpu_count()} cores)")
        print(f"loopback bytes {wire:,} / payload bytes {payload:,} = {wire / payload:.4f} "
              f"({packets:,} packets, {wire / max(packets, 1):,.0f} bytes each)")

        # Kill -9 halfway, restart with A paused to read what B committed, then finish.
        c, c_info = start_node(os.path.join(tmp, "c"), "c", boot)
        wait_for(c_info["api"], total // 2, "first half")
        c.send_signal(signal.SIGKILL)
        c.wait()
        a.send_signal(signal.SIGSTOP)
        c, c_info = start_node(os.path.join(tmp, "c"), "c", boot)
        procs.append(c)
        committed = reserve(c_info["api"])
        a.send_signal(signal.SIGCONT)
        wait_for(c_info["api"], total, "resume")
        delivered = int(metric(c_info["api"], "tributary_pullsync_delivered_total"))
        again = delivered - (total - committed)
        print(f"kill -9 mid-sync: {committed} chunks committed before the kill; after the restart "
              f"{delivered} delivered for the {total - committed} missing: "
              f"{again} chunks received twice")
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
