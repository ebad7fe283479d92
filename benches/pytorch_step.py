#!/usr/bin/env python3
"""The PyTorch + lightly peer of `selfsup bench step`: the same training step, timed the same
way, printed as the same JSON line.

It takes `selfsup bench step`'s flags (method, encoder, batch, image size, head, ViT, MAE
decoder, DINO head and crops, optimizer, `--set KEY=VALUE`) and reads the method's preset from
`selfsup config --method M` (the binary given by --selfsup), so both sides start from one
config: the same shapes, losses, temperatures and optimizer settings. Every step trains on one
random batch built before timing (ours: `--fixed-batch`).

  python3 benches/pytorch_step.py --method simclr --encoder convnet --image-size 28 \\
      --channels 1 --head-hidden 512 --optimizer sgd --threads 2

`benches/peer_steps.sh` runs every row of docs/benchmarks.md both ways, back to back.
Needs torch, torchvision, timm (ViT) and lightly (losses, heads, MAE modules).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tomllib
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--selfsup", default="target/release/selfsup",
                   help="the selfsup binary whose presets are read")
    p.add_argument("--method", default="simclr", choices=["simclr", "mae", "dino", "rotnet"])
    p.add_argument("--encoder", default="resnet18",
                   choices=["resnet18", "resnet34", "resnet50", "convnet", "vit"])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--head-hidden", type=int, default=2048)
    p.add_argument("--head-out", type=int, default=128)
    p.add_argument("--optimizer", choices=["sgd", "adamw", "lars"])
    p.add_argument("--vit-dim", type=int)
    p.add_argument("--vit-depth", type=int)
    p.add_argument("--vit-heads", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--decoder-dim", type=int)
    p.add_argument("--decoder-depth", type=int)
    p.add_argument("--dino-out", type=int)
    p.add_argument("--local-crops", type=int)
    p.add_argument("--local-size", type=int)
    p.add_argument("--fixed-batch", action="store_true", help="accepted; always the case here")
    p.add_argument("--device", default="flex", help="accepted for symmetry; CPU only here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads (default: every core, as ours)")
    return p.parse_args()


def preset(args):
    """The method's preset as `selfsup config` prints it, with the flags and --set over it."""
    toml = subprocess.run([args.selfsup, "config", "--method", args.method],
                          check=True, capture_output=True, text=True).stdout
    cfg = tomllib.loads(toml)
    named = {
        "encoder.vit.dim": args.vit_dim, "encoder.vit.depth": args.vit_depth,
        "encoder.vit.heads": args.vit_heads, "encoder.vit.patch_size": args.patch_size,
        "mae.decoder_dim": args.decoder_dim, "mae.decoder_depth": args.decoder_depth,
        "dino.head.output_dim": args.dino_out, "dino.crops.local_crops": args.local_crops,
        "dino.crops.local_size": args.local_size,
    }
    sets = [f"{k}={v}" for k, v in named.items() if v is not None] + args.set
    for kv in sets:
        key, value = kv.split("=", 1)
        *path, last = key.strip().split(".")
        node = cfg
        for part in path:
            if part not in node:
                sys.exit(f"--set {kv}: no section `{part}` in the {args.method} preset")
            node = node[part]
        if last not in node:
            sys.exit(f"--set {kv}: no key `{last}` in the {args.method} preset")
        node[last] = tomllib.loads(f"v = {value.strip()}")["v"]
    cfg["encoder"]["vit"]["image_size"] = args.image_size
    if args.optimizer:
        cfg["train"]["optimizer"]["kind"] = args.optimizer
    return cfg


# ---- encoders: the shapes of crates/selfsup-encoders ----

def conv_bn(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def convnet(channels, w):
    """c -> w -> 2w -> 4w -> 4w, strides 1, 2, 2, 2, global average pool: 4w features."""
    chans = [channels, w, 2 * w, 4 * w, 4 * w]
    layers = [conv_bn(chans[i], chans[i + 1], s) for i, s in enumerate([1, 2, 2, 2])]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4 * w


def resnet(arch, channels, cifar_stem):
    import torchvision
    net = getattr(torchvision.models, arch)(weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def vit(cfg, channels):
    from timm.models.vision_transformer import VisionTransformer
    v = cfg["encoder"]["vit"]
    net = VisionTransformer(img_size=v["image_size"], patch_size=v["patch_size"],
                            in_chans=channels, embed_dim=v["dim"], depth=v["depth"],
                            num_heads=v["heads"], mlp_ratio=v["mlp_ratio"], num_classes=0,
                            global_pool="avg" if v.get("pool") == "mean" else "token")
    return net, v["dim"]


def encoder(cfg, args):
    e = cfg["encoder"]
    if args.encoder == "convnet":
        return convnet(args.channels, args.width)
    if args.encoder == "vit":
        return vit(cfg, args.channels)
    return resnet(args.encoder, args.channels, e.get("cifar_stem", True))


# ---- methods: each returns (model, forward(batch) -> loss, after_step) ----

def simclr(cfg, args):
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    enc, dim = encoder(cfg, args)
    head = SimCLRProjectionHead(dim, args.head_hidden, args.head_out)
    model = nn.Sequential(enc, head)
    loss = NTXentLoss(temperature=cfg["simclr"]["temperature"])
    views = [rand(args, args.image_size, i) for i in range(2)]
    return model, lambda: loss(model(views[0]), model(views[1])), lambda: None


def rotnet(cfg, args):
    enc, dim = encoder(cfg, args)
    r = cfg["rotnet"]
    if r["layers"] > 1:
        head = nn.Sequential(nn.Linear(dim, r["hidden_dim"], bias=False),
                             nn.BatchNorm1d(r["hidden_dim"]), nn.ReLU(inplace=True),
                             nn.Linear(r["hidden_dim"], 4))
    else:
        head = nn.Linear(dim, 4)
    model = nn.Sequential(enc, head)
    x = rand(args, args.image_size, 0)
    images = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4).repeat_interleave(args.batch)
    return model, lambda: F.cross_entropy(model(images), labels), lambda: None


def dino(cfg, args):
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import update_momentum
    d, h = cfg["dino"], cfg["dino"]["head"]

    def build():
        enc, dim = encoder(cfg, args)
        return nn.Sequential(enc, DINOProjectionHead(
            dim, h["hidden_dim"], h["bottleneck_dim"], h["output_dim"],
            batch_norm=h["batch_norm"], norm_last_layer=h["norm_last_layer"]))

    # The teacher: a second model loaded with the student's weights (the weight-normed last
    # layer refuses `copy.deepcopy`), as lightly's DINO example builds it.
    student, teacher = build(), build()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    loss = DINOLoss(output_dim=h["output_dim"],
                    warmup_teacher_temp=d["warmup_teacher_temperature"],
                    teacher_temp=d["teacher_temperature"],
                    warmup_teacher_temp_epochs=int(d["warmup_teacher_epochs"]),
                    student_temp=d["student_temperature"],
                    center_momentum=d["center_momentum"])
    local = d["crops"]["local_size"]
    views = [rand(args, args.image_size, i) for i in range(2)]
    views += [rand(args, local, 2 + i) for i in range(d["crops"]["local_crops"])]

    def forward():
        with torch.no_grad():
            t = [teacher(v) for v in views[:2]]
        return loss(t, [student(v) for v in views], epoch=0)

    return student, forward, lambda: update_momentum(student, teacher, d["momentum_start"])


def mae(cfg, args):
    from lightly.models import utils
    from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM
    if args.encoder != "vit":
        sys.exit("mae needs --encoder vit")
    m, v = cfg["mae"], cfg["encoder"]["vit"]
    net, dim = vit(cfg, args.channels)
    backbone = MaskedVisionTransformerTIMM(vit=net)
    patch = v["patch_size"]
    seq = backbone.sequence_length
    decoder = MAEDecoderTIMM(num_patches=seq - 1, patch_size=patch, embed_dim=dim,
                             decoder_embed_dim=m["decoder_dim"], decoder_depth=m["decoder_depth"],
                             decoder_num_heads=m["decoder_heads"], in_chans=args.channels,
                             mlp_ratio=v["mlp_ratio"])
    model = nn.ModuleDict({"backbone": backbone, "decoder": decoder})
    x = rand(args, args.image_size, 0)

    def forward():
        b = x.shape[0]
        keep, hide = utils.random_token_mask(size=(b, seq), mask_ratio=m["mask_ratio"],
                                             device=x.device)
        latent = backbone.encode(images=x, idx_keep=keep)
        tokens = decoder.embed(latent)
        full = utils.repeat_token(decoder.mask_token, (b, seq))
        full = utils.set_at_index(full, keep, tokens.type_as(full))
        pred = decoder.predict(decoder.decode(full))
        pred = utils.get_at_index(pred, hide - 1)
        target = utils.get_at_index(utils.patchify(x, patch), hide - 1)
        if m["norm_pix_loss"]:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return F.mse_loss(pred, target)

    return model, forward, lambda: None


def rand(args, size, index):
    g = torch.Generator().manual_seed(1 + index)
    return torch.randn(args.batch, args.channels, size, size, generator=g)


def optimizer(cfg, params):
    o = cfg["train"]["optimizer"]
    kind, lr, wd = o["kind"], o["lr"], o["weight_decay"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o["momentum"], weight_decay=wd,
                               nesterov=o.get("nesterov", False))
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(o["beta1"], o["beta2"]),
                                 eps=o.get("eps", 1e-8), weight_decay=wd)
    from lightly.utils.lars import LARS
    return LARS(params, lr=lr, momentum=o["momentum"], weight_decay=wd,
                trust_coefficient=o.get("trust_coefficient", 0.001))


def main():
    args = parse()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(args)
    build = {"simclr": simclr, "mae": mae, "dino": dino, "rotnet": rotnet}[args.method]
    model, forward, after_step = build(cfg, args)
    model.train()
    opt = optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    clip = cfg["train"].get("grad_clip_norm", 0.0)
    times = {"step": [], "forward": [], "backward": [], "optimizer": []}
    timed = 0.0
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = forward()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        t3 = time.perf_counter()
        after_step()
        t4 = time.perf_counter()
        if not torch.isfinite(loss):
            sys.exit(f"step {step}: loss {loss.item()}")
        if step >= args.warmup:
            timed += t4 - t0
            for k, v in [("step", t4 - t0), ("forward", t1 - t0), ("backward", t2 - t1),
                         ("optimizer", t3 - t2)]:
                times[k].append(1e3 * v)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({
        "method": args.method, "encoder": args.encoder, "device": "cpu (PyTorch)",
        "batch": args.batch, "image": [args.channels, args.image_size, args.image_size],
        "steps": args.steps, "fixed_batch": True,
        "images_per_sec": args.steps * args.batch / timed,
        "ms_per_step_median": statistics.median(times["step"]),
        "ms_per_step_min": min(times["step"]),
        "forward_ms": statistics.median(times["forward"]),
        "backward_ms": statistics.median(times["backward"]),
        "optimizer_ms": statistics.median(times["optimizer"]),
        "peak_rss_mib": rss, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
