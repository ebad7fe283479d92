"""torchvision reference for `benches/loader.rs`: ImageFolder + DataLoader on the folder of
500x375 JPEGs the Rust bench wrote, two SimCLR views per image (RandomResizedCrop with
antialiasing, flip, colour jitter p=0.8, grayscale p=0.2, Gaussian blur p=0.5 at 224 px,
ToTensor, Normalize), batches of 32, with 1 worker and with one per core. Each number is the
best of three epochs after a warm-up epoch, workers kept alive between epochs (their start-up
is not counted). Prints images per second.

    cargo bench -p selfsup-benches --bench loader           # writes the JPEGs
    python3 benches/torchvision_loader.py target/selfsup-bench-jpegs/loader_500x375
"""

import os
import sys
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets

# The same SimCLR pipeline as the per-core augmentation bench (its RandomResizedCrop
# antialiases: torchvision's default).
from torchvision_augment import pipeline

torch.set_num_threads(1)


class TwoViews:
    def __init__(self, tf):
        self.tf = tf

    def __call__(self, img):
        return self.tf(img), self.tf(img)


def bench(root, size, blur, workers):
    data = datasets.ImageFolder(root, transform=TwoViews(pipeline(size, blur)))
    loader = DataLoader(
        data, batch_size=32, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=True,
    )
    best = float("inf")
    for epoch in range(4):
        t = time.perf_counter()
        n = 0
        for (a, b), _ in loader:
            n += a.shape[0]
        if epoch > 0:
            best = min(best, time.perf_counter() - t)
    return n / best


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/selfsup-bench-jpegs/loader_500x375"
    cores = os.cpu_count()
    for name, size, blur in [("simclr_224", 224, True), ("simclr_96", 96, False)]:
        for workers in sorted({1, cores}):
            ips = bench(root, size, blur, workers)
            print(f"torchvision {torch.__version__} loader/{name}/workers={workers}: {ips:.1f} images/s")


if __name__ == "__main__":
    main()
