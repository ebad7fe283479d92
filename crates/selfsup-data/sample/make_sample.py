"""Rebuilds the embedded Fashion-MNIST sample from Debian's dataset-fashion-mnist package.

Takes the first 600 training and 100 test images of each class, in file order, and writes
them as gzipped IDX files beside this script. Run: python3 make_sample.py [SRC_DIR]
"""
import gzip, struct, sys, os

src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
here = os.path.dirname(os.path.abspath(__file__))

def read(prefix):
    with gzip.open(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz")) as f:
        _, n, h, w = struct.unpack(">IIII", f.read(16)); imgs = f.read()
    with gzip.open(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        f.read(8); labels = f.read()
    return [imgs[i*h*w:(i+1)*h*w] for i in range(n)], labels, h, w

def write(prefix, per_class):
    imgs, labels, h, w = read(prefix)
    count = [0]*10; keep = []
    for i, l in enumerate(labels):
        if count[l] < per_class:
            count[l] += 1; keep.append(i)
    with gzip.GzipFile(os.path.join(here, f"{prefix}-images-idx3-ubyte.gz"), "wb", mtime=0) as f:
        f.write(struct.pack(">IIII", 2051, len(keep), h, w)); f.write(b"".join(imgs[i] for i in keep))
    with gzip.GzipFile(os.path.join(here, f"{prefix}-labels-idx1-ubyte.gz"), "wb", mtime=0) as f:
        f.write(struct.pack(">II", 2049, len(keep))); f.write(bytes(labels[i] for i in keep))

write("train", 600)
write("t10k", 100)
