"""Load benchmark of the admission webhook against a bare tornado HTTPS baseline.

Run: ``python tests/benchmarks/webhook_load.py`` (about a minute; not collected by pytest).

Both servers run as their own processes on 127.0.0.1 with the same certificate and TLS
settings (TLS >= 1.2, ALPN http/1.1):

* **webhook**: the real ``vsphere-kale webhook`` console script, logging at INFO to a file
  (one line per rewrite, as deployed);
* **baseline**: a bare tornado ``RequestHandler`` that reads the body and returns the fixed
  AdmissionReview the webhook would answer, with nothing else.

Every request is the same Kale marshal-volume PVC CREATE review, which the webhook rewrites
(the most expensive path: patch, warning, audit annotation, metrics, log line).

1. **Throughput**: the same keep-alive concurrent load on each, with ``wrk`` (Debian package
   ``wrk``) when present, else Python client threads; 3 rounds of 3 s alternating between the
   two servers (the machine may be shared; alternating exposes both to the same noise).
   The servers' own CPU time per request (from /proc) is printed too: it is what limits
   throughput on a busy node and is far less sensitive to other load than wall-clock numbers.
2. **Latency at a fixed rate**: 200 reviews/s for 10 s per server (4 interleaved chunks) over
   one keep-alive connection, timing each request from send to complete response.
3. **Pure policy**: microseconds per :func:`vsphere_kale.webhook.admission.review` call.

Goals (docs/benchmarks.md): webhook throughput >= 0.9 x baseline; p99 <= 2 ms at 200 reviews/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from vsphere_kale.install import certs
from vsphere_kale.settings import load_settings
from vsphere_kale.webhook import admission
from vsphere_kale.webhook.metrics import WebhookMetrics
from vsphere_kale.webhook.server import TextFormatter, reduce_logging_overhead

ROOT = Path(__file__).resolve().parents[2]
PATH = "/mutate/persistentvolumeclaims"
ROUNDS = 3  # throughput runs alternate baseline/webhook so background load hits both alike
ROUND_SECONDS = 3
WARMUP_SECONDS = 2
CONNECTIONS = 8
RATE = 200.0
RATE_SECONDS = 10.0
RATE_CHUNKS = 4  # the fixed-rate run is split and interleaved the same way
GOAL_RATIO = 0.9
GOAL_P99_MS = 2.0


def review_body() -> bytes:
    pvc = yaml.safe_load((ROOT / "deploy" / "examples" / "kale-marshal-pvc.yaml").read_text())
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "2b0c6a5e-7d3e-4f1e-9a55-6f7f3c1d2e01",
            "kind": {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"},
            "resource": {"group": "", "version": "v1", "resource": "persistentvolumeclaims"},
            "requestKind": {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"},
            "requestResource": {"group": "", "version": "v1", "resource": "persistentvolumeclaims"},
            "namespace": "alice",
            "name": pvc["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kubeflow:pipeline-runner",
                "uid": "0f5d1f0e-2a5b-4c1d-8e3f-1a2b3c4d5e6f",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": pvc,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    return json.dumps(review).encode()


# --- the baseline server (runs in its own process: --baseline-server) ----------------------


def run_baseline_server(cert: str, key: str, response_file: str) -> None:
    import asyncio

    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    fixed = Path(response_file).read_bytes()

    class Fixed(tornado.web.RequestHandler):
        def post(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.finish(fixed)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert, key)

    async def main() -> None:
        app = tornado.web.Application([(PATH, Fixed)])
        server = tornado.httpserver.HTTPServer(app, ssl_options=context)
        sockets = tornado.netutil.bind_sockets(0, address="127.0.0.1")
        server.add_sockets(sockets)
        print(f"port {sockets[0].getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    asyncio.run(main())


# --- process management --------------------------------------------------------------------


@contextmanager
def started(
    name: str, cmd: list[str], log_path: Path, pattern: str, *, timeout: float = 30.0
) -> Iterator[tuple[int, int]]:
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, log_path.read_text())
            if match:
                break
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited: {log_path.read_text()}")
            time.sleep(0.05)
        else:
            raise SystemExit(f"{name} did not start: {log_path.read_text()}")
        yield int(match.group(1)), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- load generators -----------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    tool: str
    latencies_ms: list[float] | None = None
    cpu_seconds: float = 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_micros_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / max(1, self.requests)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY_FILE")):read("*a")
local non2xx = 0
response = function(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT %d %f %f %f %f %d\\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status))
end
"""


def wrk_load(port: int, body_file: Path, script: Path, seconds: float) -> LoadResult:
    wrk = shutil.which("wrk")
    assert wrk is not None
    env = {**os.environ, "BODY_FILE": str(body_file)}
    base = [wrk, "-t1", f"-c{CONNECTIONS}", "-s", str(script), f"https://127.0.0.1:{port}{PATH}"]
    out = subprocess.run(
        [*base, f"-d{seconds:.0f}s"], env=env, capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"RESULT (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", out)
    if match is None:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    count, micros, p50, p95, p99, errors = match.groups()
    return LoadResult(
        requests=int(count),
        seconds=float(micros) / 1e6,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        errors=int(errors),
        tool=f"wrk -t1 -c{CONNECTIONS}",
    )


def _connection(port: int, ca: Path) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.connect()
    return conn


def _post(conn: http.client.HTTPSConnection, body: bytes) -> int:
    conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def percentile(sorted_values: list[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def python_load(port: int, ca: Path, body: bytes, seconds: float) -> LoadResult:
    """Closed-loop keep-alive load from threads (when wrk is missing). The Python client is
    usually the bottleneck here, so the ratio says less than with wrk."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        nonlocal errors
        conn = _connection(port, ca)
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            if _post(conn, body) != 200:
                bad += 1
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    started_at = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started_at
    ordered = sorted(latencies)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=1000 * percentile(ordered, 50),
        p95_ms=1000 * percentile(ordered, 95),
        p99_ms=1000 * percentile(ordered, 99),
        errors=errors,
        tool=f"python threads x{CONNECTIONS}",
    )


def fixed_rate(port: int, ca: Path, body: bytes, seconds: float) -> LoadResult:
    """RATE requests/s on one keep-alive connection; latency from send to full response."""
    conn = _connection(port, ca)
    for _ in range(20):  # warm the connection
        _post(conn, body)
    total = int(RATE * seconds)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.02
    for i in range(total):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        if _post(conn, body) != 200:
            errors += 1
        latencies.append(1000 * (time.perf_counter() - t0))
    elapsed = time.perf_counter() - start
    conn.close()
    return summarize(latencies, elapsed, errors, tool="")


def summarize(latencies_ms: list[float], seconds: float, errors: int, *, tool: str) -> LoadResult:
    ordered = sorted(latencies_ms)
    return LoadResult(
        requests=len(ordered),
        seconds=seconds,
        p50_ms=percentile(ordered, 50),
        p95_ms=percentile(ordered, 95),
        p99_ms=percentile(ordered, 99),
        errors=errors,
        tool=tool,
        latencies_ms=ordered,
    )


def policy_micros(body: bytes) -> dict[str, float]:
    settings = load_settings(None, environ={}, rwx_storage_class="nfs-client")
    decoded = json.loads(body)
    unchanged = json.loads(body)
    unchanged["request"]["object"]["spec"]["accessModes"] = ["ReadWriteOnce"]
    results: dict[str, float] = {}

    def timeit(label: str, fn: Any) -> None:
        runs = []
        for _ in range(5):
            n = 2000
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - t0) / n * 1e6)
        results[label] = statistics.median(runs)

    timeit("review (rewrite)", lambda: admission.review(decoded, settings))
    timeit("review (unchanged, RWO)", lambda: admission.review(unchanged, settings))
    metrics = WebhookMetrics()
    timeit(
        "metrics (observe + observe_decision)",
        lambda: (
            metrics.observe("rewritten", 0.0007),
            metrics.observe_decision("rewritten", "vsan-default-storage-policy", "nfs-client"),
        ),
    )
    with tempfile.TemporaryFile("w") as sink:
        logger = logging.getLogger("bench.rewrite")
        handler = logging.StreamHandler(sink)
        handler.setFormatter(TextFormatter())  # as the server does (configure_logging)
        reduce_logging_overhead()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        extra = {"namespace": "alice", "pvc": "wf-1-kale-marshal-pvc", "uid": "u", "user": "x"}
        timeit(
            "the rewrite log line (text, to a file)",
            lambda: logger.info(
                "rewrote storage class of PVC %s/%s from %s to %s (uid %s, user %s)",
                "alice", "wf-1-kale-marshal-pvc", "vsan-default-storage-policy", "nfs-client",
                "2b0c6a5e-7d3e-4f1e-9a55-6f7f3c1d2e01", "system:serviceaccount:kubeflow:x",
                extra=extra,
            ),
        )  # fmt: skip
    timeit(
        "orjson.loads + review + orjson.dumps",
        lambda: orjson.dumps(admission.review(orjson.loads(body), settings).response),
    )
    return results


def instructions_per_request(
    name: str, cmd: list[str], pattern: str, *, work: Path, ca: Path, body: bytes, count: int
) -> float:
    """User-space instructions per request in the server process (valgrind's callgrind).

    Unlike wall-clock and CPU time this does not depend on what else the machine runs, so
    it compares the two servers' work exactly (kernel time, i.e. syscalls, is not counted).
    """
    out = work / f"callgrind.{name}"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    log_path = work / f"{name}.callgrind.log"
    with started(name, [*valgrind, *cmd], log_path, pattern, timeout=600) as (port, pid):
        context = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=300)
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(pid)], check=True, capture_output=True)
        for _ in range(30):  # warm-up under instrumentation
            _post(conn, body)
        subprocess.run([*control, "--zero", str(pid)], check=True, capture_output=True)
        for _ in range(count):
            _post(conn, body)
        subprocess.run([*control, "--dump", str(pid)], check=True, capture_output=True)
        conn.close()
    match = re.search(r"^(?:totals|summary): (\d+)", Path(f"{out}.1").read_text(), re.M)
    if match is None:
        raise SystemExit(f"no totals in {out}.1")
    return int(match.group(1)) / count


def server_histogram(port: int, ca: Path) -> dict[str, float]:
    """The webhook's own latency histogram (cumulative bucket counts by upper bound)."""
    conn = _connection(port, ca)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    pattern = r'^vsphere_kale_webhook_request_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$'
    return {le: float(value) for le, value in re.findall(pattern, text, re.M)}


# --- main ----------------------------------------------------------------------------------


def fmt(result: LoadResult) -> str:
    return (
        f"{result.requests_per_second:7.0f} req/s  p50 {result.p50_ms:6.3f} ms  "
        f"p95 {result.p95_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  "
        f"server CPU {result.cpu_micros_per_request:4.0f} µs/req  errors {result.errors}"
    )


def combine(runs: list[LoadResult]) -> LoadResult:
    """Several runs as one: total requests over total time; latency percentiles as medians
    of the runs' (wrk reports percentiles only) or over all samples when we have them."""
    if all(run.latencies_ms is not None for run in runs):
        samples = [x for run in runs for x in run.latencies_ms or []]
        merged = summarize(samples, sum(r.seconds for r in runs), 0, tool=runs[0].tool)
    else:
        merged = LoadResult(
            requests=sum(r.requests for r in runs),
            seconds=sum(r.seconds for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p95_ms=statistics.median(r.p95_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            errors=0,
            tool=runs[0].tool,
        )
    merged.errors = sum(r.errors for r in runs)
    merged.cpu_seconds = sum(r.cpu_seconds for r in runs)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-server", nargs=3, metavar=("CERT", "KEY", "RESPONSE"))
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per request under valgrind (about 3 more minutes)",
    )
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(*args.baseline_server)
        return

    began = time.monotonic()
    body = review_body()
    settings = load_settings(None, environ={}, rwx_storage_class="nfs-client")
    response = admission.review(json.loads(body), settings).response
    use_wrk = shutil.which("wrk") is not None and not args.python_client

    with tempfile.TemporaryDirectory(prefix="vk-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        bundle = certs.build_cert_bundle("vsphere-kale", "vsphere-kale", extra_sans=["127.0.0.1"])
        certs.write_cert_files(work, bundle, force=False)
        body_file = work / "body.json"
        body_file.write_bytes(body)
        (work / "response.json").write_bytes(json.dumps(response, separators=(",", ":")).encode())
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT)
        cert, key, ca = work / "tls.crt", work / "tls.key", work / "ca.crt"

        commands = {
            "baseline": (
                [sys.executable, __file__, "--baseline-server", str(cert), str(key),
                 str(work / "response.json")],
                r"port (\d+)",
            ),
            "webhook": (
                [sys.executable, "-m", "vsphere_kale.cli", "webhook",
                 "--cert-file", str(cert), "--key-file", str(key), "--address", "127.0.0.1",
                 "--port", "0", "--rwx-storage-class", "nfs-client"],
                r"serving HTTPS on 127\.0\.0\.1:(\d+)",
            ),
        }  # fmt: skip
        servers: dict[str, tuple[int, int]] = {}
        for name, (cmd, pattern) in commands.items():
            servers[name] = stack.enter_context(started(name, cmd, work / f"{name}.log", pattern))
            check = _connection(servers[name][0], ca)
            assert _post(check, body) == 200, name
            check.close()

        def load(name: str, seconds: float) -> LoadResult:
            port, pid = servers[name]
            cpu = cpu_seconds(pid)
            if use_wrk:
                result = wrk_load(port, body_file, script, seconds)
            else:
                result = python_load(port, ca, body, seconds)
            result.cpu_seconds = cpu_seconds(pid) - cpu
            return result

        order = ["baseline", "webhook"]
        for name in order:  # warm-up, not counted
            load(name, WARMUP_SECONDS)
        throughput: dict[str, list[LoadResult]] = {name: [] for name in order}
        for round_index in range(ROUNDS):
            for name in order if round_index % 2 == 0 else order[::-1]:
                throughput[name].append(load(name, ROUND_SECONDS))

        rate_runs: dict[str, list[LoadResult]] = {name: [] for name in order}
        histogram_before = server_histogram(servers["webhook"][0], ca)
        for chunk in range(RATE_CHUNKS):
            for name in order if chunk % 2 == 0 else order[::-1]:
                port, pid = servers[name]
                cpu = cpu_seconds(pid)
                result = fixed_rate(port, ca, body, RATE_SECONDS / RATE_CHUNKS)
                result.cpu_seconds = cpu_seconds(pid) - cpu
                rate_runs[name].append(result)
        histogram_after = server_histogram(servers["webhook"][0], ca)
        in_server = {le: histogram_after[le] - histogram_before[le] for le in histogram_after}
        stack.close()  # stop the servers (SIGTERM) so the log is complete
        webhook_log_lines = (work / "webhook.log").read_text().count("rewrote storage class")

        instructions: dict[str, float] = {}
        if args.instructions:
            if shutil.which("valgrind") is None:
                raise SystemExit("--instructions needs valgrind (Debian package valgrind)")
            for name, (cmd, pattern) in commands.items():
                instructions[name] = instructions_per_request(
                    name, cmd, pattern, work=work, ca=ca, body=body, count=300
                )

    micros = policy_micros(body)
    base, hook = combine(throughput["baseline"]), combine(throughput["webhook"])
    base_rate, hook_rate = combine(rate_runs["baseline"]), combine(rate_runs["webhook"])
    ratio = hook.requests_per_second / base.requests_per_second
    per_round = [
        w.requests_per_second / b.requests_per_second
        for b, w in zip(throughput["baseline"], throughput["webhook"], strict=True)
    ]
    p99 = hook_rate.p99_ms

    python = sys.version.split()[0]
    print(f"vsphere-kale webhook load benchmark ({os.cpu_count()} CPUs, Python {python})")
    print(f"request: Kale marshal PVC CREATE review, {len(body)} bytes; rewritten by the webhook")
    tool = f"wrk -t1 -c{CONNECTIONS}" if use_wrk else f"python threads x{CONNECTIONS}"
    print(f"\nthroughput, keep-alive, {ROUNDS} alternating rounds of {ROUND_SECONDS} s ({tool}):")
    print(f"  baseline  {fmt(base)}")
    print(f"  webhook   {fmt(hook)}")
    print(f"  ratio webhook/baseline: {ratio:.2f} (rounds: "
          f"{', '.join(f'{r:.2f}' for r in per_round)})   goal >= {GOAL_RATIO}: "
          f"{'MET' if ratio >= GOAL_RATIO else 'NOT MET'}")  # fmt: skip
    cpu_ratio = base.cpu_micros_per_request / hook.cpu_micros_per_request
    print(f"  server CPU per request, baseline/webhook: {cpu_ratio:.2f} "
          "(the throughput ratio a CPU-bound server would reach)")  # fmt: skip
    print(
        f"\nfixed rate, {RATE:.0f} reviews/s for {RATE_SECONDS:.0f} s per server "
        f"(1 keep-alive connection, Python client, {RATE_CHUNKS} interleaved chunks):"
    )
    print(f"  baseline  {fmt(base_rate)}")
    print(f"  webhook   {fmt(hook_rate)}")
    total = in_server["+Inf"]
    within = ", ".join(
        f"{100 * in_server[le] / total:.1f}% <= {float(le) * 1000:g} ms"
        for le in ("0.0005", "0.001", "0.002", "0.005")
    )
    print(f"  inside the webhook (its own histogram, body received -> answered): {within}")
    print(f"  webhook p99 {p99:.3f} ms   goal <= {GOAL_P99_MS} ms: "
          f"{'MET' if p99 <= GOAL_P99_MS else 'NOT MET'}")  # fmt: skip
    if instructions:
        base_i, hook_i = instructions["baseline"], instructions["webhook"]
        print("\nuser-space instructions per request (valgrind callgrind, 300 requests):")
        print(f"  baseline  {base_i / 1000:7.0f} k")
        print(f"  webhook   {hook_i / 1000:7.0f} k   ratio baseline/webhook {base_i / hook_i:.2f}")
    print("\npure policy and the server's own per-review work (µs per call, median of 5 x 2000):")
    for label, value in micros.items():
        print(f"  {label:40s} {value:7.1f} µs")
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nwebhook INFO log lines written: {webhook_log_lines}; load average now: {load_avg}")
    print(f"total time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
