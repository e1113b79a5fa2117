"""MONAI Label under load: N concurrent clients POST real radiographs (and bad files) to a real server's /infer.

    .venv/bin/python scripts/load_test_monailabel.py --bundle outputs/export/cxr_distill_student_classification \\
        --clients 8 --requests 500 --workers 2 --out docs/results/monailabel_load.json

Starts ``scripts/monailabel_server.py`` on 127.0.0.1 (a free port) with ``--workers`` uvicorn worker processes
and ``--threads`` torch threads in each, waits for ``/info/``, then:

1. one client, ``--single_requests`` requests one after the other: the latency without contention;
2. ``--clients`` clients at once (one thread and one HTTP connection each) send ``--requests`` requests in all
   (stopping after ``--seconds``): the real CR DICOM and NIH PNGs, and every ``--bad_every``-th request a bad
   upload in turn (a text file, a truncated PNG, a real non-chest DICOM);
3. the server's memory (resident set of its processes) before and after the loaded phase.

Every request must be answered: a good file with 200 and a prediction of every class, a bad one with an error
status (>= 400); a dropped connection or a timeout is a failure. It reports latency p50 / p95 / p99 of the good
requests, requests per second, and whether each bad answer's body names the problem. Without ``--bundle`` a
random-weight 3-conv student is exported first (timing does not depend on the weights). Shorten with
``--requests 100 --clients 4``.

Why ``--workers``: monailabel 0.8.5's ``/infer`` endpoint is an ``async`` function that runs the inference
synchronously on the server's event loop, so one server process answers one request at a time, whatever
``MONAI_LABEL_INFER_CONCURRENCY`` says (its thread pool's result is awaited on the same loop). Concurrency comes
from uvicorn worker processes (``monailabel start_server --workers N``, passed by ``scripts/monailabel_server.py
... -- --workers N``), each with its own copy of the model; with one torch thread each (``OMP_NUM_THREADS=1``)
N workers use N cores without oversubscribing them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
DATA_ROOT = Path(os.environ.get("CXR_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
MEMORY_GROWTH_BOUND_MIB = 150.0
# what an error answer must mention for each bad upload (the loader's own wording)
BAD_PROBLEMS = {"notes.txt": "unknown image format", "truncated.png": "cannot decode image",
                "tibia_cr_not_chest_j2k.dcm": "not a chest"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_memory_mib(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


def _inputs(work: Path, good_pngs: int) -> tuple[list[Path], list[Path]]:
    dicom = DATA_ROOT / "dicom" / "chest_cr_monochrome1.dcm"
    pngs = sorted((DATA_ROOT / "nih_sample" / "images").glob("*.png"))
    pngs += sorted((DATA_ROOT / "nih14_subset" / "images").glob("*.png"))[:max(0, good_pngs - len(pngs))]
    for path in [dicom, *pngs[:1]]:
        if not path.is_file():
            raise SystemExit(f"error: {path}: real data missing (set CXR_DATA_ROOT)")
    bad_dir = work / "bad"
    bad_dir.mkdir(parents=True, exist_ok=True)
    (bad_dir / "notes.txt").write_text("not an image\n")
    (bad_dir / "truncated.png").write_bytes(pngs[0].read_bytes()[:2000])
    shutil.copy(DATA_ROOT / "dicom" / "tibia_cr_not_chest_j2k.dcm", bad_dir / "tibia_cr_not_chest_j2k.dcm")
    return [dicom, *pngs], sorted(bad_dir.iterdir())


def _export_random_bundle(work: Path) -> Path:
    import torch

    from bundle.export import DEFAULT_NAME, export_bundle
    from bundle.networks import ThreeConvStudent

    torch.manual_seed(0)
    checkpoint = work / "model.pt"
    torch.save(ThreeConvStudent(in_channels=1, out_channels=5).state_dict(), checkpoint)
    schema = DATA_ROOT.parent / "monai" / "meta_schema_20240725.json"
    result = export_bundle(checkpoint, work / "export", DEFAULT_NAME, zip_bundle=False,
                           schema=schema if schema.is_file() else None, download_schema=False)
    return result.bundle_dir


def _post(client: Any, url: str, path: Path, timeout: float) -> dict[str, Any]:
    start = time.perf_counter()
    record: dict[str, Any] = {"file": path.name}
    try:
        with path.open("rb") as stream:
            answer = client.post(url, params={"output": "json"}, files={"file": (path.name, stream)}, timeout=timeout)
        record.update(status=answer.status_code, body=answer.text[-600:])
        if answer.status_code == 200:
            record["classes"] = len(answer.json().get("prediction", []))
    except Exception as error:  # a dropped connection, a timeout: a failure, recorded
        record.update(status=None, error=f"{type(error).__name__}: {error}")
    record["seconds"] = time.perf_counter() - start
    return record


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    work = Path(tempfile.mkdtemp(prefix="monailabel_load."))
    bundle = Path(args.bundle) if args.bundle else _export_random_bundle(work)
    name = bundle.name
    good, bad = _inputs(work, args.pngs)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                "MONAI_LABEL_SESSION_PATH": str(work / "sessions")})
    command = [sys.executable, str(REPO_ROOT / "scripts" / "monailabel_server.py"), "--bundle", str(bundle),
               "--app", str(work / "app"), "--studies", str(work / "studies"), "--port", str(port),
               "--", "--workers", str(args.workers)]
    log_path = work / "server.log"
    log = log_path.open("w")
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/infer/{name}"
    report: dict[str, Any] = {"bundle": str(bundle), "workers": args.workers, "torch_threads_per_worker": args.threads,
                              "clients": args.clients, "server_command": command[1:], "load_average_before": None}
    try:
        deadline = time.monotonic() + args.startup_seconds
        while True:
            if server.poll() is not None:
                raise SystemExit(f"error: the server stopped: {log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"error: the server did not answer within {args.startup_seconds} s")
            try:
                if httpx.get(f"{base}/info/", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        # every worker loads the model on its first request: warm them all
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for path in good[: 2 * args.workers]:
                _post(client, url, path, args.timeout)
            single = [_post(client, url, good[i % len(good)], args.timeout) for i in range(args.single_requests)]
        report["single_client"] = {
            "requests": len(single), "failures": sum(r.get("status") != 200 for r in single),
            "p50_ms": statistics.median(r["seconds"] for r in single) * 1e3}
        report["load_average_before"] = [round(v, 2) for v in os.getloadavg()]
        memory_before = _server_memory_mib(server.pid)
        plan = []
        for i in range(args.requests):
            is_bad = args.bad_every > 0 and i % args.bad_every == args.bad_every - 1
            plan.append(bad[(i // args.bad_every) % len(bad)] if is_bad else good[i % len(good)])
        results: list[dict[str, Any]] = []
        lock, cursor = threading.Lock(), [0]
        stop_at = time.monotonic() + args.seconds

        def client_loop() -> None:
            # a connection per request, as curl and most PACS connectors make them: after an error answer (500)
            # uvicorn closes the connection, and a kept-alive client's next request on it fails ("connection
            # reset"), which would count a good file as failed for the server's handling of the bad one before it
            with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
                while time.monotonic() < stop_at:
                    with lock:
                        if cursor[0] >= len(plan):
                            return
                        path = plan[cursor[0]]
                        cursor[0] += 1
                    record = _post(client, url, path, args.timeout)
                    record["bad"] = path.name in BAD_PROBLEMS
                    with lock:
                        results.append(record)

        start = time.perf_counter()
        threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        memory_after = _server_memory_mib(server.pid)
        good_results = [r for r in results if not r["bad"]]
        bad_results = [r for r in results if r["bad"]]
        latencies = [r["seconds"] * 1e3 for r in good_results if r.get("status") == 200]
        good_failures = [r for r in good_results if r.get("status") != 200 or r.get("classes", 0) == 0]
        unanswered = [r for r in results if r.get("status") is None]
        bad_accepted = [r for r in bad_results if r.get("status") is not None and r["status"] < 400]
        bad_named = [r for r in bad_results if BAD_PROBLEMS[r["file"]] in r.get("body", "")]
        report.update({
            "requests_planned": len(plan), "requests_sent": len(results), "seconds": round(elapsed, 2),
            "requests_per_s": round(len(results) / elapsed, 2),
            "good": {"requests": len(good_results), "failures": len(good_failures),
                     "p50_ms": round(_percentile(latencies, 50), 1), "p95_ms": round(_percentile(latencies, 95), 1),
                     "p99_ms": round(_percentile(latencies, 99), 1), "max_ms": round(max(latencies, default=0), 1),
                     "failure_examples": good_failures[:5]},
            "bad": {"requests": len(bad_results), "answered_with_error": len(bad_results) - len(bad_accepted)
                    - sum(r.get("status") is None for r in bad_results),
                    "accepted": len(bad_accepted), "body_names_the_problem": len(bad_named),
                    "statuses": sorted({r.get("status") for r in bad_results}, key=str),
                    "examples": {r["file"]: r.get("body", r.get("error", ""))[-300:] for r in bad_results}},
            "unanswered": len(unanswered),
            "memory_mib": {"before": round(memory_before, 1), "after": round(memory_after, 1),
                           "growth": round(memory_after - memory_before, 1), "bound": MEMORY_GROWTH_BOUND_MIB},
            "load_average_after": [round(v, 2) for v in os.getloadavg()]})
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        report["server_log_tail"] = log_path.read_text()[-1500:] if log_path.is_file() else ""
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = (report["unanswered"] == 0 and report["good"]["failures"] == 0 and report["bad"]["accepted"] == 0
          and report["requests_sent"] == report["requests_planned"]
          and report["memory_mib"]["growth"] <= MEMORY_GROWTH_BOUND_MIB)
    report["targets"] = [{
        "target": f"MONAI Label, {args.clients} concurrent clients", "value": report["good"]["p99_ms"],
        "unit": "ms", "required": "every request answered, 0 failures for good files, bad ones refused, memory "
                                  f"growth <= {MEMORY_GROWTH_BOUND_MIB:g} MiB",
        "status": "PASS" if ok else "FAIL",
        "detail": f"p99 {report['good']['p99_ms']} ms under load, single-client p50 "
                  f"{report['single_client']['p50_ms']:.1f} ms; {report['requests_sent']} requests, "
                  f"{report['requests_per_s']} req/s, {args.workers} server workers"}]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None, help="exported bundle folder (default: a random-weight 3-conv "
                        "student exported for the test)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=900, help="stop sending after this long")
    parser.add_argument("--bad_every", type=int, default=10, help="every n-th request is a bad upload (0: none)")
    parser.add_argument("--single_requests", type=int, default=20)
    parser.add_argument("--pngs", type=int, default=20, help="distinct real PNGs among the good files")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of the server")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (OMP_NUM_THREADS)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a client waits for one answer")
    parser.add_argument("--startup_seconds", type=float, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log, app)")
    parser.add_argument("--out", default=None, help="JSON report")
    args = parser.parse_args(argv)
    report = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    good, bad = report["good"], report["bad"]
    print(f"{report['requests_sent']} requests from {args.clients} clients in {report['seconds']} s "
          f"({report['requests_per_s']} req/s), server with {args.workers} workers x {args.threads} thread(s)")
    print(f"good files: {good['requests']}, failures {good['failures']}, latency p50 {good['p50_ms']} ms, p95 "
          f"{good['p95_ms']} ms, p99 {good['p99_ms']} ms (one client alone: p50 "
          f"{report['single_client']['p50_ms']:.1f} ms)")
    print(f"bad uploads: {bad['requests']}, refused {bad['answered_with_error']} (statuses {bad['statuses']}), "
          f"answer names the problem: {bad['body_names_the_problem']}")
    memory = report["memory_mib"]
    print(f"server memory: {memory['before']} -> {memory['after']} MiB ({memory['growth']:+} MiB)")
    for row in report["targets"]:
        print(f"{row['status']:>6}  {row['target']}: {row['detail']}")
    return 0 if report["targets"][0]["status"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
