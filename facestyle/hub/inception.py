"""The FID Inception (paper section 4.1: FID measures the stylization effect) from pytorch-fid, over weights the
hub resolves and checks.

pytorch-fid (Seitzer) is the reference port of the TensorFlow FID network (``pt_inception-2015-12-05``): the
same graph and weights, so its FID matches the numbers papers report. facestyle does not re-implement it: the
architecture, the 299 px resize and the input scaling are pytorch-fid's ``InceptionV3``. pytorch-fid fetches its
weights itself from a URL; here the file comes from :func:`facestyle.hub.resolve` instead (the cache, torch's
hub cache, ``$FACESTYLE_CKPT_FID_INCEPTION``, or a path), checked against the sha256 prefix in its published
name, and is handed to pytorch-fid's constructor in place of its download.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.nn as nn

from ..utils import get_device
from .errors import CheckpointError
from .safe import safe_load
from .store import resolve

__all__ = ["FIDInception", "load_fid_inception", "fid_inception_architecture"]

POOL3_DIM = 2048


@contextlib.contextmanager
def _weights_from(state_dict):
    """pytorch-fid loads its weights with ``load_state_dict_from_url`` inside its constructor; for the duration
    of one construction that call returns ``state_dict`` (``None``: the random initialisation is kept)."""
    import pytorch_fid.inception as pfi
    from torchvision.models.inception import Inception3

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *a, **k: state_dict
    keep_random = state_dict is None
    original_load = Inception3.load_state_dict
    if keep_random:
        Inception3.load_state_dict = lambda self, *a, **k: None
    try:
        yield pfi
    finally:
        pfi.load_state_dict_from_url = original
        Inception3.load_state_dict = original_load


class FIDInception(nn.Module):
    """pool3 features ``[N, 2048]`` of images in [-1, 1], any size (pytorch-fid resizes to 299 px bilinearly)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pytorch-fid's InceptionV3 takes [0, 1] (normalize_input maps it to the [-1, 1] the TF graph expects).
        return self.net(((x + 1) / 2).clamp(0, 1))[0].flatten(1)


def fid_inception_architecture() -> nn.Module:
    """The FID Inception with random weights (pytorch-fid's patched torchvision Inception-v3, 1008 classes): the
    module whose state dict is the ``pt_inception-2015-12-05`` file's layout."""
    with _weights_from(None) as pfi:
        return pfi.fid_inception_v3()


def load_fid_inception(name_or_path: str | os.PathLike = "fid-inception", device: Any = "auto", *,
                       download: bool | None = None) -> FIDInception:
    """The frozen FID Inception over the resolved ``pt_inception`` file (a state dict of its 1008-class graph)."""
    path = resolve(name_or_path, download=download)
    sd = safe_load(path)
    if not (isinstance(sd, dict) and sd and all(torch.is_tensor(v) for v in sd.values())):
        raise CheckpointError(f"{path} is not a state dict of tensors; the FID Inception file is "
                              f"pt_inception-2015-12-05-6726825d.pth from pytorch-fid's releases")
    if "Mixed_7c.branch_pool.conv.weight" not in sd or "fc.weight" not in sd:
        raise CheckpointError(f"{path} is not the FID Inception (no Mixed_7c / fc weights; {len(sd)} keys, "
                              f"e.g. {', '.join(list(sd)[:3])}); expected pt_inception-2015-12-05-6726825d.pth")
    try:
        with _weights_from(sd) as pfi:
            net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[POOL3_DIM]], resize_input=True,
                                  normalize_input=True, use_fid_inception=True)
    except RuntimeError as exc:  # strict load: missing, unexpected or mis-shaped keys
        raise CheckpointError(f"{path} does not fit the FID Inception: {str(exc).splitlines()[0]}") from None
    from .store import record_first_use

    record_first_use(name_or_path, path)
    model = FIDInception(net).to(get_device(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
