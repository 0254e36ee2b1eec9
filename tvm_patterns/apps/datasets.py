"""Image data sets for the accuracy tables: Fashion-MNIST from Debian's ``dataset-fashion-mnist``
(the original IDX gzip files) and scikit-learn's 8x8 digits. Tensors [N, 1, H, W] float32,
standardised with the training set's mean and deviation, and int64 labels."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import torch

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
IDX_TYPES = {0x08: np.uint8}


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip or not) as a numpy array; ValueError naming the file when it is not one."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    except (OSError, EOFError, struct.error) as e:
        raise ValueError(f"{path}: not a readable IDX file ({e})") from None
    if zero != 0 or dtype not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {zero:#x}, type {dtype:#x})")
    body = np.frombuffer(data, IDX_TYPES[dtype], offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} values where the header says {shape} (a truncated file?)")
    return body.reshape(shape)


def fashion_mnist(root: str = FASHION_MNIST_DIR, train_limit: int | None = None, seed: int = 0):
    """(x_train, y_train, x_test, y_test) of Fashion-MNIST: 28x28 images, standardised on the training
    set. ``train_limit``: a class-balanced random subset of that many training images."""
    paths = {split: [os.path.join(root, f) for f in files] for split, files in FASHION_MNIST_FILES.items()}
    missing = [p for ps in paths.values() for p in ps if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST is not installed ({missing[0]} is missing): "
                                "sudo apt-get install dataset-fashion-mnist")
    (xtr, ytr), (xte, yte) = ((read_idx(i), read_idx(l)) for i, l in (paths["train"], paths["test"]))
    if train_limit is not None and train_limit < len(ytr):
        rng = np.random.default_rng(seed)
        per_class = train_limit // 10
        keep = np.concatenate([rng.permutation(np.flatnonzero(ytr == c))[:per_class] for c in range(10)])
        keep.sort()
        xtr, ytr = xtr[keep], ytr[keep]
    return standardise(xtr, ytr, xte, yte)


def digits(seed: int = 0, test_size: float = 0.3):
    """(x_train, y_train, x_test, y_test) of scikit-learn's digits (8x8), upsampled to 16x16, a
    stratified split."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = F.interpolate(torch.from_numpy(d.images.astype("float32") / 16.0)[:, None], size=(16, 16),
                      mode="bilinear", align_corners=False)[:, 0].numpy()
    tr, te = train_test_split(np.arange(len(d.target)), test_size=test_size, random_state=seed, stratify=d.target)
    return standardise(x[tr], d.target[tr], x[te], d.target[te])


def standardise(xtr, ytr, xte, yte):
    xtr, xte = (torch.from_numpy(np.asarray(a, dtype="float32"))[:, None] for a in (xtr, xte))
    if xtr.max() > 1.5:                                     # bytes
        xtr, xte = xtr / 255.0, xte / 255.0
    mean, std = xtr.mean(), xtr.std()
    return ((xtr - mean) / std, torch.from_numpy(np.asarray(ytr, dtype="int64")),
            (xte - mean) / std, torch.from_numpy(np.asarray(yte, dtype="int64")))
