"""The subprocess protocol: every config (and every matmul timing) runs in its own process,
the entry script started with ``--worker``, talking JSON lines over its stdin and a private copy
of its stdout (anything the libraries print goes to stderr, kept in a log)."""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

from .configs import BENCH, REPO, config_label

SCRIPT = BENCH / "pretraining_throughput.py"


class Worker:
    """One config in its own process; JSON lines over its stdin / a private stdout."""

    def __init__(self, kind: str, config: str, args, steps: int, warmup: int, max_tokens: int,
                 logdir: Path):
        self.config, self.kind, self.timeout = config, kind, args.timeout
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", config_label(config) if kind != "matmul" else config)
        self.log_path = logdir / f"{safe}.{kind}.log"
        cmd = [sys.executable, str(SCRIPT), "--worker", config, "--kind", kind,
               "--data", str(args.data), "--threads", str(args.threads), "--steps", str(steps),
               "--warmup", str(warmup), "--max-tokens", str(max_tokens)]
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONWARNINGS", "ignore")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1)

    def send(self, message: Dict) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> Dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.fail("no answer" if ready else f"no answer within {self.timeout:.0f} s")
        return json.loads(line)

    def fail(self, why: str) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.flush()
        tail = self.log_path.read_text()[-6000:]
        sys.stderr.write(tail)
        raise SystemExit(f"{self.kind} run of {self.config} failed: {why} (exit {self.proc.returncode}); "
                         f"log above ({self.log_path})")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def worker_channel() -> Tuple[Callable[[Dict], None], Callable[[], Dict]]:
    """In a worker process: (send, receive) over a private copy of stdout and stdin; from now on
    anything the libraries print goes to stderr. End of input reads as ``finish``."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message):
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    def receive():
        line = sys.stdin.readline()
        return json.loads(line) if line else {"cmd": "finish"}
    return send, receive
