#!/usr/bin/env python3
"""Upload and download through a 16-node devnet, against the local limits.

Starts `tributary devnet --nodes 16 --light-nodes 1` (release build) and waits until every
node has peers. Then, with a file of MB (default 100) megabytes of random data:

- times `tributary upload FILE --api <node 0> --wait --json`: split, store at node 0, and push
  every chunk until it has a valid receipt from its neighbourhood (the last receipt);
- times `tributary download REF --api <light node>`: the light node stores nothing, so every
  chunk comes through retrieval (an empty store);
- times `tributary download REF --api <node 9>`: node 9 holds what pull-sync has brought it
  so far, and retrieves the rest;
- once pull-sync is idle on every node, times a download at node 15;
- times `tributary upload --db` and `tributary download --db` of the same file into and out
  of an empty data directory: the local limit (hash and store; join and verify).

Every download is compared byte for byte with the file. Not part of CI:
`python3 scripts/bench-network.py` (MB=20 for a quick run).
"""

import hashlib
import json
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
MB = int(os.environ.get("MB", "100"))
NODES = 16


def get_json(api, path):
    with urllib.request.urlopen(f"http://{api}{path}", timeout=10) as r:
        return json.loads(r.read().decode())


def wait_for(path, what, timeout=120):
    start = time.time()
    while not os.path.exists(path):
        if time.time() - start > timeout:
            sys.exit(f"no {what} after {timeout} s")
        time.sleep(0.1)
    time.sleep(0.1)


def peers(api):
    try:
        return len(get_json(api, "/peers")["peers"])
    except OSError:
        return 0


def timed(args):
    start = time.time()
    out = subprocess.run([BIN, *args], check=True, capture_output=True, text=True).stdout
    return time.time() - start, out


def same(path, digest):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest() == digest


def main():
    subprocess.run(["cargo", "build", "--release", "--bin", "tributary"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="bench-network-")
    devnet = None
    try:
        data = os.urandom(MB * 1_000_000)
        digest = hashlib.sha256(data).hexdigest()
        file = os.path.join(tmp, "file")
        with open(file, "wb") as f:
            f.write(data)
        del data
        base = os.path.join(tmp, "devnet")
        devnet = subprocess.Popen(
            [BIN, "devnet", "--nodes", str(NODES), "--light-nodes", "1", "--demo-bytes", "0",
             "--base-dir", base],
            stdout=subprocess.DEVNULL)
        wait_for(os.path.join(base, "nodes.json"), "nodes.json")
        wait_for(os.path.join(base, "light-0", "node.json"), "light node")
        with open(os.path.join(base, "nodes.json")) as f:
            apis = [n["api"] for n in json.load(f)]
        with open(os.path.join(base, "light-0", "node.json")) as f:
            light = json.load(f)["api"]
        start = time.time()
        while min(peers(a) for a in apis + [light]) == 0 or time.time() - start < 10:
            if time.time() - start > 120:
                sys.exit("some node has no peer after 120 s")
            time.sleep(0.5)

        up_s, out = timed(["upload", file, "--api", apis[0], "--wait", "--json"])
        up = json.loads(out)
        ref, tag = up["reference"], up["tag"]
        print(f"{MB} MB file, {tag['split']:,} chunks, reference {ref}")
        print(f"upload at node 0 to the last receipt: {up_s:.2f} s, {MB / up_s:.1f} MB/s "
              f"(synced {tag['synced']:,}, failed {tag['failed']})")
        for name, api in [("the light node (empty store)", light), ("node 9", apis[9])]:
            chunks_before = get_json(api, "/reserve")["chunks"]
            out_path = os.path.join(tmp, "out")
            s, _ = timed(["download", ref, "-o", out_path, "--api", api])
            ok = "byte-equal" if same(out_path, digest) else "DIFFERENT"
            print(f"download at {name}, holding {chunks_before:,} chunks before: {s:.2f} s, "
                  f"{MB / s:.1f} MB/s, {ok}")
            os.remove(out_path)

        # Once pull-sync is idle everywhere, node 15 (not read from yet: what it lacks is outside
        # its neighbourhood, retrieved without sync traffic competing).
        start = time.time()
        while any(not s["historicalDone"] for a in apis
                  for s in get_json(a, "/pullsync")["streams"]):
            if time.time() - start > 600:
                print("pull-sync still running after 600 s")
                break
            time.sleep(1)
        print(f"pull-sync idle {time.time() - start:.0f} s later")
        chunks_before = get_json(apis[15], "/reserve")["chunks"]
        out_path = os.path.join(tmp, "out")
        s, _ = timed(["download", ref, "-o", out_path, "--api", apis[15]])
        ok = "byte-equal" if same(out_path, digest) else "DIFFERENT"
        print(f"download at node 15, pull-sync idle, holding {chunks_before:,} chunks: {s:.2f} s, "
              f"{MB / s:.1f} MB/s, {ok}")
        os.remove(out_path)

        db = os.path.join(tmp, "local")
        s, _ = timed(["upload", file, "--db", db])
        print(f"local limit: upload --db {s:.2f} s, {MB / s:.1f} MB/s", end="; ")
        out_path = os.path.join(tmp, "out")
        s, _ = timed(["download", ref, "-o", out_path, "--db", db])
        ok = "byte-equal" if same(out_path, digest) else "DIFFERENT"
        print(f"download --db {s:.2f} s, {MB / s:.1f} MB/s, {ok}")
    finally:
        if devnet is not None:
            devnet.send_signal(signal.SIGINT)
            try:
                devnet.wait(timeout=60)
            except subprocess.TimeoutExpired:
                devnet.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
