"""Classifier latency alone: ONNX models x thread settings x batch sizes, medians in ms.

Input is real face crops (the demo sample photos' faces, fetched through the cache), preprocessed
as in `detect`. Default models: the two bundled ones (int8 and float).

    python benchmarks/bench_classifier.py
    python benchmarks/bench_classifier.py --model runs/real160/mask_classifier.onnx --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from machine import describe_machine
from maskwatch import hub
from maskwatch.classifier import BUNDLED_MODELS, MaskClassifier, bundled_model_path
from maskwatch.faces import YuNetDetector, crop_faces

BATCHES = (1, 3, 10)


def sample_crops(size: int, count: int = 10) -> np.ndarray:
    detector = YuNetDetector()
    crops = []
    for name in ("sample-d898baff", "sample-e07e9c7e", "sample-896a9f04"):
        image = cv2.imread(str(hub.fetch(name)))
        crops.extend(crop_faces(image, detector.detect(image, thorough=True).boxes, size))
    return np.stack(crops[:count])


def median_ms(classifier: MaskClassifier, crops: np.ndarray, runs: int) -> float:
    for _ in range(5):
        classifier.predict(crops)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        classifier.predict(crops)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="repeatable")
    parser.add_argument("--threads", type=int, action="append", help="default: 0 (all) and 1")
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    models = args.model or [bundled_model_path(name) for name in BUNDLED_MODELS]
    print(f"machine: {describe_machine()}")
    print(
        "model                          size  threads  spin  "
        + "  ".join(f"batch {b:>2}" for b in BATCHES)
    )
    for model in models:
        for threads in args.threads or [0, 1]:
            for spinning in (False, True):
                classifier = MaskClassifier(model, threads=threads, spinning=spinning)
                crops = sample_crops(classifier.input_size)
                cells = [f"{median_ms(classifier, crops[:b], args.runs):6.2f}ms" for b in BATCHES]
                print(
                    f"{model.name:<30} {classifier.input_size:>4}  {threads or 'all':>7}  "
                    f"{'on' if spinning else 'off':>4}  " + "  ".join(cells),
                    flush=True,
                )
    print("(median time of one predict call: preprocessing and ONNX Runtime, one batch)")


if __name__ == "__main__":
    main()
