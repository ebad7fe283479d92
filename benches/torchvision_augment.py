"""torchvision reference for the `augment_per_core` benches of benches/simclr.rs.

Times, on one thread, what the Rust bench times: open and decode each JPEG of the folder the
Rust bench wrote (PIL), then two views of SimCLR's augmentations (RandomResizedCrop,
horizontal flip, colour jitter p=0.8, grayscale p=0.2, Gaussian blur p=0.5 at 224 px only,
ToTensor, Normalize). Prints images per second per core.

    cargo bench -p selfsup-benches --bench simclr -- augment   # writes the JPEGs
    python3 benches/torchvision_augment.py target/selfsup-bench-jpegs
"""

import pathlib
import sys
import time

import torch
from PIL import Image
from torchvision import transforms as T

torch.set_num_threads(1)


def pipeline(size, blur):
    steps = [
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if blur:
        # SimCLR: kernel 10 % of the image side, sigma in [0.1, 2].
        steps.append(T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5))
    steps += [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    return T.Compose(steps)


def bench(folder, size, blur, repeats=5):
    files = sorted(pathlib.Path(folder).glob("*.jpg"))
    tf = pipeline(size, blur)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for f in files:
            img = Image.open(f).convert("RGB")
            tf(img)
            tf(img)
        best = min(best, time.perf_counter() - t)
    return len(files) / best


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/selfsup-bench-jpegs")
    for name, size, blur in [("simclr_32px_jpeg", 32, False), ("simclr_224px_jpeg", 224, True)]:
        ips = bench(root / name, size, blur)
        print(f"torchvision {torch.__version__} {name}: {ips:.0f} images/s per core (2 views each)")


if __name__ == "__main__":
    main()
