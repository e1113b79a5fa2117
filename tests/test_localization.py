"""Pointing game and box IoU against hand-computed cases; scoring maps against phantom and NIH-style boxes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from bundle.data import make_phantom_datalist
from bundle.localization import (
    box_iou,
    boxes_mask,
    cam_saliency,
    class_localization,
    evaluate_saliency,
    map_agreement,
    localization_scores,
    nih_box_records,
    pointing_game,
    scale_boxes,
)
from conftest import require_shared


def test_boxes_mask_covers_pixels_whose_centre_is_inside_and_keeps_tiny_boxes():
    mask = boxes_mask([[1, 2, 3, 4]], (5, 6))  # columns 1-2, rows 2-3
    assert mask.sum() == 4 and mask[2:4, 1:3].all()
    # a box thinner than a pixel still marks the pixel holding its centre
    tiny = boxes_mask([{"label": "Nodule", "box": [2.1, 3.2, 2.4, 3.4]}], (5, 6))
    assert tiny.sum() == 1 and tiny[3, 2]
    assert scale_boxes([{"label": "x", "box": [10, 20, 30, 40]}], (100, 200), (50, 50))[0]["box"] == [2.5, 10, 7.5, 20]


def test_pointing_game_hand_computed():
    saliency = np.zeros((6, 6))
    saliency[4, 1] = 1.0  # the peak: row 4, column 1
    assert pointing_game(saliency, [[0, 3, 2, 6]])  # columns 0-1, rows 3-5: holds it
    assert not pointing_game(saliency, [[3, 0, 6, 2]])
    assert pointing_game(saliency, [[3, 0, 6, 2], [1, 4, 2, 5]])  # any box counts
    # tolerance: the nearest box pixel (row 4, column 3) is 2 px away
    assert not pointing_game(saliency, [[3, 4, 5, 5]], tolerance=1.5)
    assert pointing_game(saliency, [[3, 4, 5, 5]], tolerance=2.0)
    # ties: the first maximum in row-major order
    flat = np.ones((4, 4))
    assert pointing_game(flat, [[0, 0, 1, 1]]) and not pointing_game(flat, [[3, 3, 4, 4]])


def test_box_iou_hand_computed():
    saliency = np.zeros((4, 4))
    saliency[0:2, 0:2] = 1.0  # upper half of the range: 4 pixels
    saliency[2, 0] = 0.4  # below 0.5 of the range: out
    assert box_iou(saliency, [[0, 0, 2, 2]]) == 1.0
    assert box_iou(saliency, [[0, 0, 4, 2]]) == 0.5  # 4 / 8
    assert box_iou(saliency, [[1, 1, 3, 3]]) == pytest.approx(1 / 7)  # overlap 1, union 4 + 4 - 1
    assert box_iou(saliency + 5.0, [[0, 0, 2, 2]]) == 1.0  # min-max scaled: a floor does not matter
    assert box_iou(saliency, [[0, 0, 2, 2]], threshold=0.3) == pytest.approx(4 / 5)  # 0.4 now in
    assert box_iou(np.ones((4, 4)), [[0, 0, 2, 2]]) == 0.0  # a constant map marks nothing


def test_localization_scores_per_image_and_per_finding():
    peak = np.zeros((10, 10))
    peak[1, 1] = 1.0
    boxes_a = [{"label": "Nodule", "box": [0, 0, 2, 2]}, {"label": "Cardiomegaly", "box": [5, 5, 10, 10]}]
    boxes_b = [{"label": "Cardiomegaly", "box": [5, 5, 10, 10]}]
    scores = localization_scores([(peak, boxes_a), (peak, boxes_b), (peak, [])])
    assert scores["images"] == 2 and scores["pointing_game"] == 0.5
    assert scores["per_finding"]["Nodule"] == {"images": 1, "pointing_game": 1.0, "iou": 0.25, "chance": 0.04}
    assert scores["per_finding"]["Cardiomegaly"]["pointing_game"] == 0.0
    assert scores["chance"] == pytest.approx((0.29 + 0.25) / 2)
    assert localization_scores([])["pointing_game"] is None


def test_evaluate_saliency_scales_phantom_boxes_to_the_map(tmp_path):
    records = make_phantom_datalist(num_images=12, image_size=64, seed=3, cache_dir=tmp_path).records
    with_boxes = [r for r in records if r["boxes"]]
    assert with_boxes
    size = 32
    batches = [with_boxes[i:i + 4] for i in range(0, len(with_boxes), 4)]  # in the order they are scored

    def oracle(images: torch.Tensor) -> torch.Tensor:
        # 1 exactly on each image's boxes (64 px phantoms -> 32 px maps): pointing game 1, IoU 1
        batch = batches.pop(0)
        assert images.shape == (len(batch), 1, size, size)
        return torch.stack([torch.as_tensor(boxes_mask(scale_boxes(r["boxes"], (64, 64), (size, size)), (size, size)),
                                            dtype=torch.float32) for r in batch])

    scores = evaluate_saliency(oracle, with_boxes, image_size=size, batch_size=4)
    assert scores["images"] == len(with_boxes) and scores["pointing_game"] == 1.0 and scores["iou"] == 1.0
    assert set(scores["per_finding"]) == {b["label"] for r in with_boxes for b in r["boxes"]}


def _class_oracle(records, source, size, wrong=False):
    """Per class, 1 on that class's boxes (or on another class's boxes, when ``wrong``)."""
    names = sorted({b["label"] for r in records for b in r["boxes"]})

    def saliency(images: torch.Tensor, class_idx: int) -> torch.Tensor:
        label = names[(class_idx + 1) % len(names)] if wrong else names[class_idx]
        wanted = [r for r in records if any(b["label"] == names[class_idx] for b in r["boxes"])]
        chosen = wanted[saliency.seen.get(class_idx, 0):][:len(images)]
        saliency.seen[class_idx] = saliency.seen.get(class_idx, 0) + len(images)
        return torch.stack([torch.as_tensor(boxes_mask(scale_boxes([b for b in r["boxes"] if b["label"] == label],
                                                                   (source, source), (size, size)), (size, size)),
                                            dtype=torch.float32) for r in chosen])

    saliency.seen = {}
    return names, saliency


def test_class_localization_scores_each_class_map_against_its_own_boxes(tmp_path):
    records = make_phantom_datalist(num_images=16, image_size=64, seed=5, cache_dir=tmp_path).records
    names, oracle = _class_oracle(records, 64, 32)
    scores = class_localization(oracle, records, 32, names, batch_size=4)
    pairs = sum(len({b["label"] for b in r["boxes"]}) for r in records)
    assert scores["images"] == pairs and scores["pointing_game"] == 1.0 and scores["iou"] == 1.0
    assert set(scores["per_finding"]) == set(names) and 0 < scores["chance"] < 1
    names, wrong = _class_oracle(records, 64, 32, wrong=True)  # each class's map shows another finding
    assert class_localization(wrong, records, 32, names, batch_size=4)["iou"] < 0.5


def test_map_agreement_of_identical_shifted_and_real_grad_cam_maps(tmp_path):
    records = make_phantom_datalist(num_images=12, image_size=64, seed=7, cache_dir=tmp_path).records
    names = sorted({b["label"] for r in records for b in r["boxes"]})

    def peak(images: torch.Tensor, class_idx: int, shift: int = 0) -> torch.Tensor:
        size = images.shape[-1]
        maps = torch.zeros(len(images), size, size)
        maps[:, size // 4 + shift, size // 4] = 1.0
        return torch.nn.functional.avg_pool2d(maps[:, None], 3, 1, 1)[:, 0]

    same = map_agreement(peak, peak, records, 32, 32, names)
    assert same["pairs"] > 0 and same["correlation"] == pytest.approx(1.0) and same["iou"] == 1.0
    assert same["same_peak"] == 1.0 and set(same["per_finding"]) <= set(names)
    moved = map_agreement(peak, lambda i, k: peak(i, k, shift=8), records, 32, 32, names)
    assert moved["correlation"] < 0.1 and moved["iou"] == 0.0 and moved["same_peak"] == 0.0
    flat = map_agreement(peak, lambda i, k: torch.zeros(len(i), 32, 32), records, 32, 32, names)
    assert flat["flat"] == 1.0 and flat["correlation"] == 0.0 and flat["same_peak"] == 0.0
    # a real CNN: Grad-CAM maps of a 3-conv student at two input sizes, compared at the larger
    from bundle.networks import build_network

    network, _ = build_network("student", num_classes=len(names))
    network.eval()
    cam = cam_saliency(network, "conv3")
    maps = cam(torch.rand(2, 1, 32, 32), 0)
    assert maps.shape == (2, 32, 32) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    real = map_agreement(cam, cam, records, 32, 16, names)
    assert real["pairs"] == same["pairs"] and -1.0 <= real["correlation"] <= 1.0 and 0.0 <= real["iou"] <= 1.0


def test_nih_box_records_pairs_boxes_with_the_images_found(tmp_path):
    (tmp_path / "images").mkdir()
    # a copy of NIH's 1024 px image downsampled to 512 px: the boxes (on the 1024 px grid) are halved
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(tmp_path / "images" / "00000003_000.png")
    Image.fromarray(np.zeros((1024, 1024), np.uint8)).save(tmp_path / "images" / "00000004_000.png")
    csv = tmp_path / "BBox_List_2017.csv.gz"
    with gzip.open(csv, "wt") as stream:
        stream.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000003_000.png,Effusion,10,20,30,40\n"
                     "00000004_000.png,Effusion,10,20,30,40\n00000099_000.png,Mass,1,2,3,4\n")
    records = nih_box_records(csv, tmp_path)
    assert len(records) == 2
    assert records[0]["boxes"] == [{"label": "Pleural Effusion", "box": [5.0, 10.0, 20.0, 30.0]}]
    assert records[1]["boxes"] == [{"label": "Pleural Effusion", "box": [10.0, 20.0, 40.0, 60.0]}]


def test_the_real_nih_samples_have_no_box():
    """The three NIH images in ../shared/data are not in BBox_List_2017: the benchmark reports that."""
    bbox = require_shared("labels/nih_BBox_List_2017.csv.gz")
    images = require_shared("nih_sample/images")
    assert nih_box_records(bbox, images) == []
