"""The full-size interop check: a ResNet-18 pretrained here, exported in torchvision's layout,
loaded by torchvision with load_state_dict(strict=True), and its features of real test images
compared with `selfsup embed`'s.

    cargo build --release -p selfsup-cli
    python3 benches/interop_check.py [--run runs/simclr-r18] [--images 256]

Without --run it pretrains one (SimCLR, ResNet-18 with the CIFAR stem, 30 steps on the
embedded Fashion-MNIST sample). Needs torch, torchvision, safetensors, numpy.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SELFSUP = os.path.join(ROOT, "target", "release", "selfsup")


def run(*args):
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def main():
    global SELFSUP
    p = argparse.ArgumentParser()
    p.add_argument("--run", default=None)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--work", default=os.path.join(ROOT, "target", "interop-check"))
    p.add_argument("--selfsup", default=SELFSUP, help="the selfsup binary")
    a = p.parse_args()
    SELFSUP = a.selfsup
    os.makedirs(a.work, exist_ok=True)
    run_dir = a.run
    if run_dir is None:
        run_dir = os.path.join(a.work, "run")
        if not os.path.exists(os.path.join(run_dir, "encoder.bpk")):
            run(SELFSUP, "pretrain", "--set", 'encoder.arch="resnet18"', "--max-steps", "30",
                "--no-eval", "--quiet", "--out", run_dir)
    weights = os.path.join(a.work, "encoder.safetensors")
    feats = os.path.join(a.work, "features.npy")
    run(SELFSUP, "export", "--checkpoint", run_dir, "--out", weights)
    run(SELFSUP, "embed", "--checkpoint", run_dir, "--split", "test", "--max", str(a.images),
        "--out", feats)
    info = json.load(open(weights[: -len(".safetensors")] + ".json"))
    cfg = open(os.path.join(run_dir, "config.toml")).read()
    if "spec = \"sample\"" not in cfg.replace("'", '"'):
        sys.exit("this check reads the embedded sample's test images; the run used other data")

    m = getattr(torchvision.models, info["arch"])()
    c = info["channels"]
    if info["stem"] == "cifar":
        m.conv1 = torch.nn.Conv2d(c, 64, 3, 1, 1, bias=False)
        m.maxpool = torch.nn.Identity()
    elif c != 3:
        m.conv1 = torch.nn.Conv2d(c, 64, 7, 2, 3, bias=False)
    m.fc = torch.nn.Identity()
    m.load_state_dict(load_file(weights), strict=True)
    m.eval()

    # The sample's test images (IDX), in [0, 1], normalized as the run was: the in-memory
    # evaluation transform at the images' own 28 px is the identity resize.
    raw = gzip.open(os.path.join(ROOT, "crates", "selfsup-data", "sample",
                                 "t10k-images-idx3-ubyte.gz")).read()
    n, h, w = (int.from_bytes(raw[4 * i: 4 * i + 4], "big") for i in (1, 2, 3))
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, h, w)[: a.images]
    x = torch.from_numpy(x.astype(np.float32) / 255.0)
    mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        theirs = m((x - mean) / std).numpy()
    ours = np.load(feats)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = np.abs(ours - theirs).max()
    scale = np.abs(theirs).max()
    print(f"{ours.shape[0]} images, {ours.shape[1]} features: max |selfsup - torchvision| = "
          f"{diff:.3e}, {diff / scale:.3e} of the largest feature ({scale:.3e})")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    sys.exit(0 if diff / scale < 1e-4 else 1)


main()
