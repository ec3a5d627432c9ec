"""The mini world's two judges (docs/design.md section 3), small CNNs read top to bottom.

* :class:`Oracle` - evaluation only, never a training loss: predicts every content factor and the domain of a
  portrait from any of the six domains. Its penultimate features also serve as the mini profile's FID space.
* :class:`IdentityNet` - the mini profile's identity loss (the role FaceNet/ArcFace play for real faces in
  Eq. 1): a unit-norm embedding trained on the real domain only, invariant to pose, expression, lighting and
  accessories, sensitive to the intrinsic face factors (:data:`IDENTITY_FACTORS`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Factors that define "who" a mini-world face is; everything else (yaw, tilt, smile, hair, accessories,
# background, light) is a nuisance the identity embedding must ignore, as face recognisers ignore pose.
IDENTITY_FACTORS = ("face_width", "jaw", "skin_tone", "eye_size", "eye_spacing", "eye_color", "brow_thickness",
                    "nose_size", "mouth_width")


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, 2, 1), nn.GroupNorm(8, cout), nn.SiLU())


class ConvTrunk(nn.Module):
    """Four stride-2 blocks then a flatten of the 4x4 map (keeps layout: yaw and tilt live in position)."""

    def __init__(self, widths=(32, 64, 96, 128), input_size: int = 64, feat_dim: int = 256):
        super().__init__()
        self.input_size = input_size
        chans = (3,) + tuple(widths)
        self.blocks = nn.Sequential(*[conv_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        side = input_size // 2 ** len(widths)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, feat_dim), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return self.fc(self.blocks(x))


class Oracle(nn.Module):
    """Predicts each factor (regression in [0,1] or class logits) and the domain from one image in [-1,1]."""

    def __init__(self, factor_kinds: list[tuple[str, int]], n_domains: int = 6, input_size: int = 64,
                 feat_dim: int = 256):
        super().__init__()
        # factor_kinds: [(kind, n_values)], n_values 1 for continuous factors
        self.factor_kinds = [tuple(k) for k in factor_kinds]
        self.trunk = ConvTrunk(input_size=input_size, feat_dim=feat_dim)
        n_out = sum(n for _, n in self.factor_kinds)
        self.factor_head = nn.Linear(feat_dim, n_out)
        self.domain_head = nn.Linear(feat_dim, n_domains)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the mini profile's FID feature space."""
        return self.trunk(x)

    def split(self, out: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(out, [n for _, n in self.factor_kinds], dim=1))

    def forward(self, x: torch.Tensor):
        h = self.trunk(x)
        return self.split(self.factor_head(h)), self.domain_head(h)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Content ``[N, F]`` in the world's encoding (codes as floats) and domain indices ``[N]``."""
        contents, domains = [], []
        for i in range(0, len(x), batch):
            parts, dom = self(x[i:i + batch])
            cols = [p.squeeze(1).clamp(0, 1) if kind == "continuous" else p.argmax(1).float()
                    for (kind, _), p in zip(self.factor_kinds, parts)]
            contents.append(torch.stack(cols, 1))
            domains.append(dom.argmax(1))
        return torch.cat(contents), torch.cat(domains)


class IdentityNet(nn.Module):
    """Unit-norm identity embedding (the mini FaceNet); identity distance = 1 - cosine similarity."""

    def __init__(self, input_size: int = 64, embed_dim: int = 128, feat_dim: int = 256):
        super().__init__()
        self.trunk = ConvTrunk(input_size=input_size, feat_dim=feat_dim)
        self.head = nn.Linear(feat_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.trunk(x)), dim=1)
