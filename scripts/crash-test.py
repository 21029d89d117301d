#!/usr/bin/env python3
"""Kills `tributary` with SIGKILL at random moments and checks what survives.

    scripts/crash-test.py [RUNS] [--bin PATH] [--seed N]

RUNS (default 200) are spread over five scenarios; each run kills one process at a random
moment, restarts it, and checks:

- import: `state import` killed mid-way; the store opens and a rerun of the import reaches the
  expected root.
- put:    a series of `state put`s, one killed mid-way; the store opens and every put that was
  acknowledged (printed its root) is there.
- sync:   `state sync --peer` killed mid-way; the rerun reaches the root and, if the killed run
  had committed anything, fetches fewer keys than the whole (committed work is not re-fetched).
- upload: `upload --db` killed mid-way; the store opens, a rerun gives the same reference and
  the file downloads byte for byte.
- node:   a node receiving chunks over `POST /chunks`, killed; after a restart every chunk it
  acknowledged (201) is served.

Prints each run's scenario, kill point and outcome, then the totals; exits 1 on any failure.
Not in CI at full length; CI runs a short version (`RUNS=5` with the debug build).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMPTY_ROOT = "00" * 32


class Failure(Exception):
    pass


def run(bin_, *args, stdin=None, check=True):
    p = subprocess.run([bin_, *args], input=stdin, capture_output=True)
    if check and p.returncode != 0:
        raise Failure(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.decode().strip()}")
    return p


def kill_after(proc, delay):
    """SIGKILLs `proc` after `delay` s; returns whether it was still running then."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def pairs_text(rng, n):
    lines = []
    for _ in range(n):
        key = rng.randbytes(32).hex()
        value = rng.randbytes(rng.randint(1, 64)).hex()
        lines.append(f"{key} {value}")
    return ("\n".join(lines) + "\n").encode()


class Scenarios:
    def __init__(self, bin_, rng, work):
        self.bin = bin_
        self.rng = rng
        self.work = work
        self.pairs = pairs_text(rng, 30_000)
        self.pairs_path = os.path.join(work, "pairs.txt")
        with open(self.pairs_path, "wb") as f:
            f.write(self.pairs)
        ref = os.path.join(work, "reference-db")
        self.expected_root = run(bin_, "state", "import", "--db", ref, self.pairs_path).stdout.decode().strip()
        self.file = os.path.join(work, "file.bin")
        with open(self.file, "wb") as f:
            f.write(rng.randbytes(24 * 1024 * 1024))
        self.source = None
        # How long each killable command takes uninterrupted, measured once; kill points are
        # drawn within it, so every run has a chance to land mid-way.
        self.durations = {}

    def kill_point(self, name, command):
        if name not in self.durations:
            started = time.monotonic()
            command()
            self.durations[name] = time.monotonic() - started
        return self.rng.uniform(0.02, 0.98) * self.durations[name]

    def fresh(self, name):
        path = os.path.join(self.work, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def import_(self):
        db = self.fresh("import-db")
        delay = self.kill_point("import", lambda: run(self.bin, "state", "import", "--db", self.fresh("import-db"),
                                                      "--batch", "2000", self.pairs_path))
        db = self.fresh("import-db")
        proc = subprocess.Popen([self.bin, "state", "import", "--db", db, "--batch", "2000", self.pairs_path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = kill_after(proc, delay)
        if os.path.isdir(db):
            run(self.bin, "state", "root", "--db", db)  # opens
        root = run(self.bin, "state", "import", "--db", db, self.pairs_path).stdout.decode().strip()
        if root != self.expected_root:
            raise Failure(f"rerun reached {root}, expected {self.expected_root}")
        return delay, killed

    def put(self):
        db = self.fresh("put-db")
        run(self.bin, "state", "import", "--db", db, "-", stdin=b"")
        acknowledged = {}
        kill_at = self.rng.randint(3, 12)
        delay = self.kill_point("put", lambda: run(self.bin, "state", "put", "--db", db, "ff", "00"))
        killed = False
        for i in range(kill_at + 1):
            key, value = f"{i:04x}" + self.rng.randbytes(4).hex(), self.rng.randbytes(8).hex()
            proc = subprocess.Popen([self.bin, "state", "put", "--db", db, key, value],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            if i == kill_at:
                killed = kill_after(proc, delay)
                if not killed and proc.returncode == 0:
                    acknowledged[key] = value
            else:
                proc.wait()
                if proc.returncode != 0:
                    raise Failure(f"put {i} failed")
                acknowledged[key] = value
        for key, value in acknowledged.items():
            got = run(self.bin, "state", "get", "--db", db, key).stdout.decode().strip()
            if got != value:
                raise Failure(f"acknowledged put of {key} lost: got {got!r}")
        return delay, killed

    def sync(self):
        if self.source is None:
            src = self.fresh("sync-source")
            run(self.bin, "state", "import", "--db", src, self.pairs_path)
            self.source = Node(self.bin, src)
        dst = self.fresh("sync-db")
        args = ["state", "sync", "--db", dst, "--root", self.expected_root, "--peer", self.source.addr,
                "--key-limit", "256", "--work-limit", "2"]
        delay = self.kill_point("sync", lambda: run(self.bin, *args))
        dst = self.fresh("sync-db")
        proc = subprocess.Popen([self.bin, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = kill_after(proc, delay)
        partial = run(self.bin, "state", "root", "--db", dst).stdout.decode().strip() if os.path.isdir(dst) else EMPTY_ROOT
        out = json.loads(run(self.bin, *args, "--json").stdout)
        if out["root"] != self.expected_root:
            raise Failure(f"sync reached {out['root']}")
        committed = partial not in (EMPTY_ROOT, self.expected_root)
        if killed and committed and out["keys"] >= 30_000:
            raise Failure(f"rerun fetched all {out['keys']} keys again")
        return delay, killed

    def upload(self):
        db = self.fresh("upload-db")
        delay = self.kill_point("upload", lambda: run(self.bin, "upload", self.file, "--db", self.fresh("upload-db")))
        db = self.fresh("upload-db")
        proc = subprocess.Popen([self.bin, "upload", self.file, "--db", db],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = kill_after(proc, delay)
        ref = run(self.bin, "upload", self.file, "--db", db).stdout.decode().strip()
        expected = run(self.bin, "chunk", "hash", self.file).stdout.decode().strip()
        if ref != expected:
            raise Failure(f"rerun reference {ref}, expected {expected}")
        out = os.path.join(self.work, "download.bin")
        run(self.bin, "download", ref, "-o", out, "--db", db)
        if not filecmp(out, self.file):
            raise Failure("the download differs from the file")
        return delay, killed

    def node(self):
        dir_ = self.fresh("node-db")
        node = Node(self.bin, dir_)
        acknowledged, refused = [], []
        stop = threading.Event()
        seed = self.rng.randrange(1 << 32)

        def post_chunks():
            # Its own generator: the main thread's draws stay the same whatever this does.
            rng = random.Random(seed)
            while not stop.is_set():
                payload = rng.randbytes(rng.randint(1, 4096))
                chunk = len(payload).to_bytes(8, "little") + payload
                req = urllib.request.Request(f"http://{node.api}/chunks", data=chunk, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        acknowledged.append((json.load(r)["reference"], chunk))
                except urllib.error.HTTPError as e:
                    if not stop.is_set():
                        refused.append(f"POST /chunks answered {e.code}")
                    return
                except (urllib.error.URLError, ConnectionError, OSError):
                    return  # the node is gone: killed

        poster = threading.Thread(target=post_chunks)
        poster.start()
        delay = self.rng.uniform(0.05, 1.0)
        time.sleep(delay)
        node.kill()  # while a request is in flight
        stop.set()
        poster.join()
        if refused:
            raise Failure(refused[0])
        node = Node(self.bin, dir_)
        try:
            for address, chunk in acknowledged:
                with urllib.request.urlopen(f"http://{node.api}/chunks/{address}", timeout=10) as r:
                    if r.read() != chunk:
                        raise Failure(f"chunk {address} differs after the restart")
        except urllib.error.HTTPError as e:
            raise Failure(f"an acknowledged chunk is gone after the restart: {e}") from e
        finally:
            node.kill()
        if not acknowledged:
            raise Failure("no chunk was acknowledged before the kill")
        return delay, True


def filecmp(a, b):
    with open(a, "rb") as x, open(b, "rb") as y:
        return x.read() == y.read()


class Node:
    def __init__(self, bin_, dir_):
        info = os.path.join(dir_, "node.json")
        if os.path.exists(info):
            os.remove(info)
        self.proc = subprocess.Popen([bin_, "node", "--data-dir", dir_, "--api", "127.0.0.1:0",
                                      "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while not os.path.exists(info):
            if time.monotonic() - started > 30 or self.proc.poll() is not None:
                raise Failure("the node did not start")
            time.sleep(0.02)
        time.sleep(0.05)
        with open(info) as f:
            meta = json.load(f)
        self.api, self.addr = meta["api"], meta["listen"][0]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=200)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/release/tributary"))
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"error: {args.bin} is missing: cargo build --release --bin tributary (or --bin PATH)")
    rng = random.Random(args.seed)
    print(f"seed {args.seed} (--seed {args.seed} replays), binary {args.bin}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="tributary-crash-") as work:
        s = Scenarios(args.bin, rng, work)
        scenarios = [("import", s.import_), ("put", s.put), ("sync", s.sync), ("upload", s.upload), ("node", s.node)]
        killed_runs = 0
        try:
            for i in range(args.runs):
                name, scenario = scenarios[i % len(scenarios)]
                try:
                    delay, killed = scenario()
                    killed_runs += killed
                    outcome = "ok" if killed else "ok (finished before the kill)"
                    print(f"run {i + 1:3}: {name:6} kill at {delay * 1000:6.0f} ms: {outcome}", flush=True)
                except Failure as e:
                    failures += 1
                    print(f"run {i + 1:3}: {name:6} FAILED: {e}", flush=True)
        finally:
            if s.source is not None:
                s.source.kill()
    print(f"{args.runs} runs, {killed_runs} killed mid-way, {failures} failures (seed {args.seed})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
