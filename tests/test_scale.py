"""At the size users train: progress lines off a terminal, image and teacher caches that fit, partial teacher coverage."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureTyped, RandGaussianNoised, Resized

from bundle.console import ProgressLog, format_duration, progress
from bundle.data import CachedImageDataset, CXRDataError, default_num_workers
from bundle.data.image_cache import cache_key, parse_bytes
from bundle.distill import TeacherOutputCache
from bundle.distill.cache import coverage_summary
from bundle.handlers import LossTermMeans

from conftest import REPO_ROOT


def _records(count: int, size: int = 20, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"image": rng.random((1, size, size)).astype(np.float32), "label": [float(i % 2), 1.0 - i % 2],
             "label_mask": [1.0, 1.0], "patient_id": f"p{i}"} for i in range(count)]


def _eval(size: int = 8) -> Compose:
    return Compose([Resized("image", (size, size), mode="area"),
                    EnsureTyped(["image", "label", "label_mask"], dtype=torch.float32, track_meta=False)])


# ------------------------------------------------------------------------------------------ progress lines


def test_progress_lines_say_done_total_rate_and_time_left(caplog):
    log = ProgressLog("building the cache", total=100, unit="images", interval=0.0)
    with caplog.at_level(logging.INFO, logger="cxr-distill.progress"):
        for _ in range(4):
            log.update(25)
        log.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("building the cache: 25/100 images (25%), ") and "images/s, about" in lines[0]
    assert lines[0].endswith(" left")
    assert lines[-1].startswith("building the cache: done, 100 images in ")
    assert format_duration(75) == "1 min 15 s" and format_duration(4000) == "1 h 06 min"


def test_progress_off_a_terminal_logs_lines_instead_of_a_bar(caplog, monkeypatch):
    monkeypatch.setenv("CXR_PROGRESS_INTERVAL", "0")
    with caplog.at_level(logging.INFO, logger="cxr-distill.progress"):
        assert list(progress(range(3), "bootstrap")) == [0, 1, 2]  # pytest's stderr is not a terminal
        assert list(progress(range(3), "never", enabled=False)) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == [line for line in lines if line.startswith("bootstrap: ") and "/3 it" in line][:3]
    assert lines[-1].startswith("bootstrap: done, 3 it in") and not any(line.startswith("never") for line in lines)


@pytest.mark.timeout(900)
def test_a_redirected_training_run_writes_progress_lines_to_the_console_and_log_txt(tmp_path):
    """A run on 2,000 records with its output in a file, as on a server: every long phase says where it is
    (a progress line after every step here: CXR_PROGRESS_INTERVAL=0)."""
    out = tmp_path / "student"
    console = tmp_path / "console.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CXR_PROGRESS_INTERVAL": "0"}
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/student.json",
               "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf",
               "--output_dir", str(out), "--dataset_options", "{'num_images': 2000, 'source_size': 16}",
               "--image_size", "16", "--batch_size", "64", "--max_epochs", "1", "--device", "cpu",
               "--check_data", "full", "--augment", "false"]
    with open(console, "w") as stream:
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT, timeout=900)
    text = console.read_text()
    assert result.returncode == 0, text[-3000:]
    log = (out / "log.txt").read_text()
    for where in (text, log):
        assert re.search(r"image cache \(training\): 1,\d{3} images x 512 B \(1 x 16 x 16 float16\) = [\d.]+ kB; "
                         r"memory budget [\d.]+ [GM]B; auto -> memory", where)
        for phase in ("checking 1,", "building the training image cache: ",
                      "building the validation image cache: ", "training epoch: ", "validation: "):
            lines = [line for line in where.splitlines() if phase in line]
            assert any("/s" in line and " left" in line for line in lines), (phase, where[-3000:])
    assert "\r" not in text  # no bar redrawn into the file


# ------------------------------------------------------------------------------------------ the image cache


def test_memory_cache_matches_the_transform_in_float32_and_closely_in_float16():
    records, transform = _records(12), _eval()
    exact = CachedImageDataset(records, transform, mode="memory", dtype="float32")
    compact = CachedImageDataset(records, transform, mode="memory", dtype="float16")
    assert exact.mode == compact.mode == "memory"
    assert compact.nbytes == 12 * 8 * 8 * 2 == exact.nbytes // 2
    for index in (0, 11):
        reference = transform(dict(records[index]))
        assert torch.equal(exact[index]["image"], reference["image"])
        assert torch.allclose(compact[index]["image"], reference["image"], atol=5e-4)
        assert compact[index]["image"].dtype == torch.float32
        np.testing.assert_array_equal(np.asarray(compact[index]["label"]), np.asarray(reference["label"]))


def test_memory_cache_keeps_what_fits_its_budget_and_reads_the_rest():
    records = _records(10)
    dataset = CachedImageDataset(records, _eval(), mode="memory", budget=4 * 128, dtype="float16")  # 4 images
    assert dataset.nbytes == 4 * 128 and len(dataset) == 10
    assert torch.allclose(dataset[9]["image"], _eval()(dict(records[9]))["image"])


def _run_with_open_file_limit(script: str, limit: int = 256) -> subprocess.CompletedProcess:
    """``script`` in a new Python process that may hold at most ``limit`` open files."""
    limited = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n" + script
    return subprocess.run([sys.executable, "-c", limited], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_a_cache_built_by_workers_keeps_no_open_file_per_image():
    """Tensors from DataLoader workers arrive in shared memory, one file descriptor each: the cache must copy
    the small values it keeps (labels, masks), or a validation split of 10,000 images ends in "Too many open
    files" (found at NIH's full size; a default limit of 1,024 ends it at about 1,000 images)."""
    result = _run_with_open_file_limit(
        "import sys; sys.path.insert(0, 'tests')\n"
        "import numpy as np\n"
        "from test_scale import _records, _eval\n"
        "from bundle.data import CachedImageDataset\n"
        "records = _records(600, size=8)\n"
        "dataset = CachedImageDataset(records, _eval(), mode='memory', num_workers=1)\n"
        "assert np.array_equal(np.asarray(dataset[599]['label']), records[599]['label'])\n"
        "print('built', len(dataset))\n")
    assert result.returncode == 0 and "built 600" in result.stdout, result.stderr[-2000:]


def test_an_evaluation_pass_over_workers_holds_no_open_file_per_batch():
    """MONAI's metric handlers keep every batch's labels for the epoch; labels still in a worker's shared memory
    would hold one open file each (a 25,000-image test split at batch 32 passes a limit of 1,024)."""
    result = _run_with_open_file_limit(
        "import torch\n"
        "from monai.handlers import ROCAUC, from_engine\n"
        "from torch.utils.data import DataLoader, Dataset\n"
        "from bundle.engines import CXREvaluator\n"
        "class Items(Dataset):\n"
        "    def __len__(self): return 600\n"
        "    def __getitem__(self, i): return {'image': torch.rand(1, 4, 4), 'label': torch.tensor([i % 2, 1 - i % 2]),\n"
        "                                      'label_mask': torch.ones(2)}\n"
        "loader = DataLoader(Items(), batch_size=2, num_workers=1)\n"
        "network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))\n"
        "evaluator = CXREvaluator(device='cpu', val_data_loader=loader, network=network, decollate=False,\n"
        "    key_val_metric={'auc': ROCAUC(output_transform=from_engine(['pred', 'label']))})\n"
        "evaluator.run()\n"
        "print('batches', evaluator.state.iteration)\n")
    assert result.returncode == 0 and "batches 300" in result.stdout, result.stderr[-2000:]


def test_the_cached_items_other_values_are_columns_of_a_few_bytes_an_item():
    import pickle
    import tracemalloc

    from bundle.data.image_cache import _Columns

    count = 20_000
    tracemalloc.start()
    columns = _Columns(count)
    for index in range(count):
        columns.set(index, {"label": np.full(14, index % 2, np.float32), "label_mask": np.ones(14, np.float32),
                            "patient_id": "p1"})
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert used / count < 2 * 14 * 4 + 16  # two stacked float32 rows and a list slot: was about 600 bytes
    item = columns[3]
    assert set(item) == {"label", "label_mask", "patient_id"} and item["label"].tolist() == [1.0] * 14
    item["label"][:] = 7  # a transform changing it in place does not change the cache
    assert columns[3]["label"].tolist() == [1.0] * 14

    mixed = _Columns(3)  # another shape, and a key an item lacks, fall back to lists
    mixed.set(0, {"label": np.zeros(2, np.float32), "boxes": [1]})
    mixed.set(1, {"label": np.zeros(3, np.float32)})
    mixed.set(2, {"label": np.ones(2, np.float32), "boxes": [2]})
    again = pickle.loads(pickle.dumps(mixed))  # the disk cache
    assert [sorted(again[i]) for i in range(3)] == [["boxes", "label"], ["label"], ["boxes", "label"]]
    assert again[1]["label"].shape == (3,) and again[2]["boxes"] == [2]


def test_random_transforms_run_on_every_read_after_the_cache():
    transform = Compose([Resized("image", (8, 8), mode="area"), RandGaussianNoised("image", prob=1.0, std=0.5)])
    dataset = CachedImageDataset(_records(3), transform, mode="memory")
    assert dataset.head_end == 1
    assert not torch.equal(torch.as_tensor(dataset[0]["image"]), torch.as_tensor(dataset[0]["image"]))


def test_auto_chooses_disk_beyond_the_budget_and_the_disk_cache_is_reused_until_preprocessing_changes(tmp_path, caplog):
    records = _records(6)
    with caplog.at_level(logging.INFO):
        first = CachedImageDataset(records, _eval(), mode="auto", budget=100, directory=tmp_path, name="validation")
    assert first.mode == "disk" and first.location.parent == tmp_path
    assert "image cache (validation): 6 images x 128 B (1 x 8 x 8 float16) = 768 B; memory budget 100 B; " \
           f"auto -> disk, under {tmp_path}" in caplog.text
    assert torch.allclose(first[5]["image"], _eval()(dict(records[5]))["image"], atol=5e-4)
    stamp = (first.location / "images.npy").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = CachedImageDataset(records, _eval(), mode="disk", directory=tmp_path, name="validation")
    assert again.location == first.location and "reusing" in caplog.text
    assert (again.location / "images.npy").stat().st_mtime_ns == stamp
    other = CachedImageDataset(records, _eval(size=12), mode="disk", directory=tmp_path, name="validation")
    assert other.location != first.location and tuple(other[0]["image"].shape) == (1, 12, 12)
    assert cache_key([Resized("image", (8, 8), mode="bilinear")], "float16", records) != \
        cache_key([Resized("image", (8, 8), mode="area")], "float16", records)
    assert cache_key([Resized("image", (8, 8))], "float16", records) != cache_key([Resized("image", (8, 8))],
                                                                                  "float16", records[:5])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_uint8_cache_and_byte_sizes():
    records = _records(2)
    dataset = CachedImageDataset(records, _eval(), mode="memory", dtype="uint8")
    assert dataset.nbytes == 2 * 64
    assert torch.allclose(dataset[1]["image"], _eval()(dict(records[1]))["image"], atol=1 / 255)
    assert parse_bytes("6GB") == 6 * 10**9 and parse_bytes("512 MiB") == 512 * 2**20 and parse_bytes(2e9) == 2 * 10**9
    with pytest.raises(ValueError, match="image_cache must be one of"):
        CachedImageDataset(records, _eval(), mode="ram")


def test_default_workers_follow_the_machine(monkeypatch):
    monkeypatch.setattr("bundle.data.image_cache.available_cores", lambda: 16)
    assert default_num_workers(100) == 0  # small sets: the main process, exactly reproducible
    assert default_num_workers(112_120) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers(112_120) == 3


# ------------------------------------------------------------------------------------------ the teacher cache


class _Teacher(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(x).mean(dim=(2, 3)))


def test_a_teacher_cache_over_its_budget_is_refused_before_the_pass_with_the_alternatives():
    dataset = [{"image": torch.rand(1, 8, 8), "sample_index": i} for i in range(10)]
    with pytest.raises(CXRDataError) as caught:
        TeacherOutputCache.compute(_Teacher(), ["block"], dataset, storage="memory", budget=1000)
    message = str(caught.value)
    assert "10 images x 1.0 kB (logits 2 + block 4 x 8 x 8, float32) = 10.3 kB" in message
    assert "teacher_cache 'disk'" in message and "teacher_cache null" in message and "loss_weights#feature 0" in message
    logits_only = TeacherOutputCache.compute(_Teacher(), [], dataset, storage="memory", budget=1000)
    assert logits_only.nbytes == 10 * 2 * 4


def test_a_disk_teacher_cache_is_written_as_the_pass_goes_and_equals_the_memory_one(tmp_path):
    torch.manual_seed(0)
    teacher = _Teacher()
    dataset = [{"image": torch.rand(1, 8, 8), "sample_index": i} for i in range(7)]
    memory = TeacherOutputCache.compute(teacher, ["block"], dataset, storage="memory", batch_size=3)
    disk = TeacherOutputCache.compute(teacher, ["block"], dataset, storage="disk", directory=tmp_path, batch_size=3,
                                      dtype="float16")
    logits, features = disk.lookup([0, 6])
    reference_logits, reference_features = memory.lookup([0, 6])
    assert torch.allclose(logits, reference_logits, atol=1e-2)
    assert torch.allclose(features["block"], reference_features["block"], atol=1e-2)
    assert isinstance(disk.features["block"], np.ndarray) and disk.features["block"].dtype == np.float16


# ------------------------------------------------------------------------------------------ partial coverage


def test_the_coverage_summary_and_the_soft_mean_over_covered_images_only():
    line = coverage_summary("chexnet.csv.gz", np.array([True] * 3 + [False] * 9))
    assert line == ("recorded teacher chexnet.csv.gz: soft targets for 3 of 12 training images (25.0%); the other 9 "
                    "learn from their labels alone (the soft term's mean, loss_mean/soft, is over the covered images "
                    "only)")
    metric = LossTermMeans()
    metric.reset()
    # batch 1: 4 covered images, soft mean 1.0; batch 2: none covered (0 by construction); batch 3: 1 covered, 6.0
    for soft, covered in ((1.0, 4.0), (0.0, 0.0), (6.0, 1.0)):
        metric.update(metric._output_transform({"loss_terms": {"hard": 2.0, "soft": soft},
                                                "loss_term_weights": {"soft": covered}}))
    means = metric.compute()
    assert means["loss_mean/soft"] == pytest.approx((4 * 1.0 + 6.0) / 5)
    assert means["loss_mean/hard"] == pytest.approx(2.0)
