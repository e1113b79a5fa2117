"""What every network of the bundle costs: size, FLOPs, latency, throughput, memory, end to end.

For every network of ``bundle.networks.NETWORKS`` (the TAKD teacher, assistant and
3-conv student, the DenseNet161 teacher and the compact student), at the image size its
stage config trains it at::

    python scripts/benchmark_speed.py --out docs/results/speed_cpu.json
    python scripts/benchmark_speed.py --device cuda --out docs/results/speed_cuda.json

* parameters and FLOPs (PyTorch's ``FlopCounterMode``, 2 per multiply-add);
* latency at batch 1 (CPU: ``torch.set_num_threads(1)``) and throughput at batch 32
  (CPU: all threads, ``--threads``); on CUDA also the throughput under AMP (float16);
  medians of ``--repeats`` timed runs after ``--warmup`` untimed ones;
* peak memory: CPU, the process's peak resident set (``ru_maxrss``) after each phase,
  each network in its own process, and its growth over the process with the network
  loaded; CUDA, ``torch.cuda.max_memory_allocated`` per phase;
* end-to-end latency of one real DICOM (``--dicom``) through the bundle's inference
  path: ``configs/inference.json``'s preprocessing (``LoadCXRd``: read, modality and VOI
  LUT, MONOCHROME1 inversion; ``Resized``), then, as the deploy app does, one forward pass
  that gives the prediction and ``monai.visualize.GradCAM``'s map of the most probable finding
  (``SaliencyWriter.explain``; the backward pass stops at the saliency layer), the two parts
  timed separately; batch 1, one thread on CPU;
* the teacher-output cache's speed-up per training epoch, by ``scripts/benchmark_cache.py``
  (``--cache run``; ``--cache_args`` are passed to it), or read from an earlier result of it
  (``--cache_from FILE``), or not (``--cache skip``);
* the issue's targets, PASS or FAIL: the 3-conv student >= 50x the throughput of its
  teacher, the compact student >= 10x that of DenseNet161, the compact student's
  end-to-end CPU latency < 100 ms.

Timings depend on the machine and on what else runs on it: the report records the CPU,
the thread counts, the load average and the date. No network is trained: weights are
random (timing does not depend on them), and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DICOM = Path(os.environ.get("CXR_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")) / "dicom" / \
    "chest_cr_monochrome1.dcm"
WORKER_MARK = "BENCHMARK_SPEED_RESULT "

# (what, network, reference network or None, kind, target): the targets
THROUGHPUT_TARGETS = (("student", "teacher", 50.0), ("student", "teacher_paper", 50.0),
                      ("compact_student", "densenet161", 10.0))
LATENCY_TARGETS = (("compact_student", 100.0),)


# ---------------------------------------------------------------------------------------------- worker


def _peak_rss_mib() -> float:
    """Peak resident set of this process so far (Linux: KiB; macOS: bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _timed(step: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``step``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _stats_ms(times: list[float]) -> dict[str, Any]:
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "runs_ms": [round(t * 1e3, 3) for t in times]}


def measure_network(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """All measurements of one network (run in a process of its own)."""
    import torch

    from bundle.networks import NETWORKS, build_network, count_flops, count_parameters

    os.chdir(REPO_ROOT)
    device = torch.device(settings["device"])
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    repeats, warmup, batch = settings["repeats"], settings["warmup"], settings["batch_size"]
    threads = settings["threads"]

    network, size = build_network(name, settings["num_classes"], settings["image_size"])
    result: dict[str, Any] = {
        "network": type(network).__name__, "description": NETWORKS[name].description,
        "config": NETWORKS[name].config, "image_size": size, "num_classes": settings["num_classes"],
        "parameters": count_parameters(network),
    }
    result["gflops"] = count_flops(network, (1, size, size)) / 1e9
    result["gmacs"] = result["gflops"] / 2
    network = network.to(device).eval()
    memory: dict[str, float] = {}

    def phase_start() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)

    def phase_memory(key: str) -> None:
        if cuda:
            memory[key] = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            memory[key] = _peak_rss_mib()

    memory["model_loaded_mib" if not cuda else "weights_mib"] = (
        torch.cuda.memory_allocated(device) / 2**20 if cuda else _peak_rss_mib())

    def forward(x: torch.Tensor, amp: bool = False) -> Callable[[], Any]:
        def step() -> Any:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                return network(x)
        return step

    torch.manual_seed(0)
    # latency, batch 1 (CPU: one thread)
    if not cuda:
        torch.set_num_threads(1)
    phase_start()
    x1 = torch.rand(1, 1, size, size, device=device)
    latency = _timed(forward(x1), repeats, warmup, sync)
    result["latency_batch1"] = {**_stats_ms(latency), "batch_size": 1, "threads": 1 if not cuda else None}
    phase_memory("batch1_peak_mib")

    # throughput, batch 32 (CPU: all threads)
    if not cuda:
        torch.set_num_threads(threads)
    xb = torch.rand(batch, 1, size, size, device=device)
    phase_start()
    times = _timed(forward(xb), repeats, warmup, sync)
    result["throughput"] = {"images_per_s": batch / statistics.median(times), **_stats_ms(times),
                            "batch_size": batch, "threads": threads if not cuda else None}
    phase_memory(f"batch{batch}_peak_mib")
    if cuda:
        phase_start()
        times = _timed(forward(xb, amp=True), repeats, warmup, sync)
        result["throughput_amp"] = {"images_per_s": batch / statistics.median(times), **_stats_ms(times),
                                    "batch_size": batch, "dtype": "float16"}
        phase_memory(f"batch{batch}_amp_peak_mib")
        phase_start()
        latency = _timed(forward(x1, amp=True), repeats, warmup, sync)
        result["latency_batch1_amp"] = {**_stats_ms(latency), "batch_size": 1, "dtype": "float16"}
    # end to end on one DICOM (batch 1, one thread on CPU); last, as decoding the DICOM takes memory of its own
    if settings["dicom"]:
        phase_start()
        result["end_to_end"] = end_to_end(network, name, size, device, settings, sync)
        phase_memory("end_to_end_peak_mib")
    if not cuda:
        base = memory["model_loaded_mib"]
        memory.update({f"{key[:-4]}_over_model_mib": value - base for key, value in list(memory.items())
                       if key.endswith("_peak_mib")})
    how = ("torch.cuda.max_memory_allocated per phase" if cuda else
           "peak resident set (ru_maxrss) of the process after each phase, in phase order (latency, throughput, "
           "end to end: a phase's peak includes the earlier ones); *_over_model: growth over the process with "
           "the network built")
    result["memory"] = {"how": how, **{k: round(v, 1) for k, v in memory.items()}}
    return result


def end_to_end(network: Any, name: str, size: int, device: Any, settings: dict[str, Any],
               sync: Callable[[], None]) -> dict[str, Any]:
    """Read, preprocess, predict and explain one DICOM, as the deploy app does, timed by part."""
    import torch
    from monai.bundle import ConfigParser

    from bundle.handlers import SaliencyWriter
    from bundle.networks import NETWORKS

    if device.type == "cpu":
        torch.set_num_threads(1)
    parser = ConfigParser()
    parser.read_config("configs/inference.json")
    parser.update({"image_size": size, "device": f"$torch.device('{device}')"})
    preprocessing = parser.get_parsed_content("preprocessing")
    task = parser.get_parsed_content("task")
    threshold = parser.get_parsed_content("threshold")
    layer = NETWORKS[name].saliency_layer
    classes = [str(k) for k in range(settings["num_classes"])]
    writer = SaliencyWriter(network=network, target_layer=layer, output_dir=".", class_names=classes, task=task,
                            threshold=threshold, max_classes=settings["saliency_classes"])
    dicom = str(settings["dicom"])
    parts: dict[str, list[float]] = {"read_preprocess": [], "predict_and_saliency": []}
    explained: list[int] = []

    def once(record: bool) -> None:
        t0 = time.perf_counter()
        data = preprocessing({"image": dicom, "filename": dicom})
        if data.get("error"):
            raise RuntimeError(f"{dicom}: {data['error']}")
        image = data["image"][None].to(device)
        t1 = time.perf_counter()
        # as the deploy app does: the prediction and the top class's map from one forward pass
        logits, maps = writer.explain(image)
        (torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, 1)).float().cpu()
        sync()
        t2 = time.perf_counter()
        if record:
            parts["read_preprocess"].append(t1 - t0)
            parts["predict_and_saliency"].append(t2 - t1)
            explained.append(len(maps[0]))

    for _ in range(settings["warmup"]):
        once(False)
    for _ in range(settings["repeats"]):
        once(True)
    totals = [sum(values) for values in zip(*parts.values())]
    return {**_stats_ms(totals), "parts_median_ms": {k: statistics.median(v) * 1e3 for k, v in parts.items()},
            "dicom": os.path.relpath(dicom, REPO_ROOT), "saliency_layer": layer,
            "explained_classes": max(explained), "threads": 1 if device.type == "cpu" else None,
            "path": "configs/inference.json#preprocessing (LoadCXRd, Resized, EnsureTyped) -> SaliencyWriter.explain: "
                    "one forward pass gives the logits and monai.visualize.GradCAM's map of the top class (the "
                    "backward pass stops at the saliency layer), as the deploy app (bundle.deploy) runs it"}


def worker(name: str, settings_json: str) -> int:
    result = measure_network(name, json.loads(settings_json))
    print(WORKER_MARK + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- parent


def run_worker(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Measure one network in a fresh process (so peak memory is its own)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--worker_settings",
               json.dumps(settings)]
    done = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(WORKER_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {name} failed (exit status {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(WORKER_MARK):])


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    import monai
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "monai": monai.__version__, "cpu_count": os.cpu_count(),
                            "torch_threads_default": torch.get_num_threads()}
    info["load_average"] = _load_average()
    try:
        lscpu = subprocess.run(["lscpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=10)
        info["lscpu"] = [line for line in lscpu.stdout.splitlines()
                         if not line.startswith(("Flags", "Vulnerab"))][:24]
        model = [line.split(":", 1)[1].strip() for line in info["lscpu"] if line.startswith("Model name")]
        if model:
            info["cpu_model"] = model[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        memory_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                              if line.startswith("MemTotal")))
        info["memory_gib"] = round(memory_kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def teacher_cache(args: argparse.Namespace) -> dict[str, Any] | None:
    """The cache's epoch speed-up: run scripts/benchmark_cache.py, or read an earlier result of it."""
    if args.cache_from:
        report = json.loads(Path(args.cache_from).read_text())
        source = f"read from {args.cache_from}"
    elif args.cache == "run":
        sys.path.insert(0, str(REPO_ROOT / "scripts"))
        import benchmark_cache

        out = Path(args.work_dir) / "teacher_cache.json"
        argv = ["--device", args.device, "--work_dir", str(Path(args.work_dir) / "cache"), "--out", str(out),
                *shlex.split(args.cache_args)]
        print(f"teacher cache: python scripts/benchmark_cache.py {shlex.join(argv)}", flush=True)
        cwd = os.getcwd()
        try:
            benchmark_cache.main(argv)
        finally:
            os.chdir(cwd)
        report = json.loads(out.read_text())
        source = "measured by scripts/benchmark_cache.py " + shlex.join(argv)
    else:
        return None
    return {"epoch_speedup": report["epoch_speedup"], "source": source,
            "mean_epoch_seconds": {k: v["mean_epoch_seconds"] for k, v in report["results"].items()},
            "settings": {k: report["settings"].get(k) for k in ("stage", "teacher", "image_size", "batch_size",
                                                               "epochs", "storage", "device")},
            "date": report.get("date"), "command": report.get("command")}


def evaluate_targets(results: dict[str, dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """The issue's targets, each PASS, FAIL or 'not measured'."""
    rows = []
    for name, reference, target in THROUGHPUT_TARGETS:
        row: dict[str, Any] = {"target": f"{name} throughput >= {target:g}x {reference}'s ({device})",
                               "network": name, "reference": reference, "required": target}
        if name in results and reference in results:
            ratio = results[name]["throughput"]["images_per_s"] / results[reference]["throughput"]["images_per_s"]
            sizes = (results[name]["image_size"], results[reference]["image_size"])
            row.update({"value": ratio, "status": "PASS" if ratio >= target else "FAIL", "image_sizes": sizes})
        else:
            row["status"] = "not measured"
        rows.append(row)
    for name, limit in LATENCY_TARGETS:
        row = {"target": f"{name} end-to-end single-DICOM latency < {limit:g} ms ({device})", "network": name,
               "required_ms": limit}
        e2e = results.get(name, {}).get("end_to_end")
        if e2e:
            row.update({"value": e2e["median_ms"], "status": "PASS" if e2e["median_ms"] < limit else "FAIL"})
        else:
            row["status"] = "not measured"
        rows.append(row)
    return rows


def summary_table(results: dict[str, dict[str, Any]], device: str) -> str:
    batch = next(iter(results.values()))["throughput"]["batch_size"] if results else 32
    amp = device == "cuda"
    head = ["network", "size", "parameters", "GFLOPs", "latency b1 (ms)", f"throughput b{batch} (img/s)"]
    head += ["throughput AMP (img/s)"] if amp else []
    head += [f"peak memory b1 / b{batch} (MiB)", "end to end (ms)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results.items():
        memory = r["memory"]
        mem = (f"{memory.get('batch1_peak_mib', float('nan')):.0f} / "
               f"{memory.get(f'batch{batch}_peak_mib', float('nan')):.0f}")
        e2e = r.get("end_to_end")
        cells = [name, f"{r['image_size']} px", f"{r['parameters']:,}", f"{r['gflops']:.3f}",
                 f"{r['latency_batch1']['median_ms']:.1f}", f"{r['throughput']['images_per_s']:.1f}"]
        cells += [f"{r['throughput_amp']['images_per_s']:.1f}"] if amp else []
        cells += [mem, f"{e2e['median_ms']:.1f}" if e2e else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON report, e.g. docs/results/speed_cpu.json")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--networks", nargs="*", default=None, help="names in bundle.networks.NETWORKS (default: all)")
    parser.add_argument("--image_size", type=int, default=None, help="one size for every network (default: each "
                        "network's stage-config image_size)")
    parser.add_argument("--num_classes", type=int, default=14, help="classes of every network (ChestX-ray14: 14)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32, help="batch of the throughput measurement")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the throughput measurement "
                        "(default: torch's default, one per core)")
    parser.add_argument("--dicom", default=str(DEFAULT_DICOM), help="the DICOM of the end-to-end measurement "
                        "('none' to skip it)")
    parser.add_argument("--saliency_classes", type=int, default=1, help="findings explained per image end to end "
                        "(the most probable ones; SaliencyWriter's max_classes)")
    parser.add_argument("--cache", default="run", choices=("run", "skip"),
                        help="measure the teacher-output cache's epoch speed-up with scripts/benchmark_cache.py")
    parser.add_argument("--cache_args", default="", help="arguments for scripts/benchmark_cache.py, one string")
    parser.add_argument("--cache_from", default=None, help="read the cache speed-up from this benchmark_cache.py "
                        "JSON instead of measuring it")
    parser.add_argument("--work_dir", default="outputs/benchmark_speed")
    parser.add_argument("--note", default="", help="free text stored in the report (e.g. how busy the machine was)")
    parser.add_argument("--update", action="store_true", help="add the networks measured now to the --out report "
                        "(replacing earlier measurements of them) instead of starting a new one")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker_settings", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.worker_settings)

    import torch

    from bundle.networks import NETWORKS, profile_table

    os.chdir(REPO_ROOT)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    names = args.networks or list(NETWORKS)
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown networks {unknown}; known: {list(NETWORKS)}")
    dicom = None if args.dicom.lower() == "none" else Path(args.dicom)
    if dicom is not None and not dicom.is_file():
        parser.error(f"--dicom {dicom} does not exist (pass --dicom none to skip the end-to-end measurement)")
    settings = {"device": args.device, "num_classes": args.num_classes, "image_size": args.image_size,
                "repeats": args.repeats, "warmup": args.warmup, "batch_size": args.batch_size,
                "threads": args.threads or torch.get_num_threads(), "dicom": str(dicom.resolve()) if dicom else None,
                "saliency_classes": args.saliency_classes}
    command = shlex.join(["python", "scripts/benchmark_speed.py", *(argv if argv is not None else sys.argv[1:])])
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    out = Path(args.out) if args.out else None
    if args.update and out is not None and out.is_file():
        report = json.loads(out.read_text())
        if report.get("device") != args.device:
            parser.error(f"--update: {out} was measured on {report.get('device')}, not {args.device}")
        report.setdefault("updates", []).append({"command": command, "date": date, "networks": names,
                                                 "settings": settings, "note": args.note})
    else:
        report = {"command": command, "date": date, "device": args.device, "settings": settings,
                  "machine": machine_info(args.device), "note": args.note, "networks": {}}

    def save() -> None:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")

    for name in names:
        print(f"measuring {name} ...", flush=True)
        load = _load_average()
        result = {**run_worker(name, settings), "measured": {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
                                                            "load_average_before": load, "settings": settings}}
        report["networks"][name] = result
        report["networks"] = {k: report["networks"][k] for k in sorted(
            report["networks"], key=lambda k: list(NETWORKS).index(k) if k in NETWORKS else len(NETWORKS))}
        e2e = result.get("end_to_end")
        print(f"  {result['network']} at {result['image_size']} px: {result['parameters']:,} parameters, "
              f"{result['gflops']:.3f} GFLOPs; latency {result['latency_batch1']['median_ms']:.1f} ms, "
              f"throughput {result['throughput']['images_per_s']:.1f} img/s"
              + (f", end to end {e2e['median_ms']:.1f} ms" if e2e else ""), flush=True)
        save()
    cache = teacher_cache(args)
    if cache is not None or not args.update:
        report["teacher_cache"] = cache
    report["targets"] = evaluate_targets(report["networks"], args.device)
    (report["updates"][-1] if "updates" in report and args.update else report["machine"])["load_average_end"] = \
        _load_average()
    save()

    print()
    print("Parameters and FLOPs (PyTorch's FlopCounterMode, 2 per multiply-add), at each network's image size:")
    print(profile_table([{**r, "name": n} for n, r in report["networks"].items()]))
    print()
    print(summary_table(report["networks"], args.device))
    if report.get("teacher_cache"):
        print(f"\nteacher-output cache: {report['teacher_cache']['epoch_speedup']:.2f}x faster training epochs "
              f"({report['teacher_cache']['source']})")
    print()
    for row in report["targets"]:
        value = row.get("value")
        shown = "" if value is None else (f": {value:.1f} ms" if "required_ms" in row else f": {value:.1f}x")
        print(f"{row['status']:>12}  {row['target']}{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
