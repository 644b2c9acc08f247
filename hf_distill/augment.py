"""Differentiable image augmentation for distillation (Zhao & Bilen, *Dataset Condensation with Differentiable
Siamese Augmentation*, ICML 2021), which the gradient- and distribution-matching papers distil and evaluate with.

`augment(x, ops, seed)` picks one of `ops` and applies it with random parameters drawn from `seed`: gradients flow
back into `x`, so synthetic pixels can be learned through it. *Siamese*: the real and the synthetic examples of a
class are augmented with the same seed, hence the same transformation (one draw for the whole batch). Evaluation
learners are trained with a fresh draw per example and step instead (`per_example=True`).

The operations and their ranges are the paper's defaults: `color` (brightness ± 0.5, saturation × [0, 2], contrast
× [0.5, 1.5]), `crop` (a shift of up to 1/8 of the side, zero padding), `cutout` (a zeroed square of half the side),
`flip` (horizontal, half the time), `scale` (each axis × [1/1.2, 1.2]) and `rotate` (± 15°).
"""

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def parse_augmentation(value: str | None) -> tuple[str, ...]:
    """`"color_crop_cutout"` → `("color", "crop", "cutout")`; a clear error for an unknown operation."""
    if not value:
        return ()
    ops = tuple(value.split("_"))
    unknown = [op for op in ops if op not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"augmentation: unknown operation(s) {', '.join(map(repr, unknown))} in {value!r}; use operations from "
            f"{', '.join(AUGMENTATIONS)} joined by '_' (e.g. 'color_crop_cutout_flip_scale_rotate')."
        )
    return ops


def augment(x: torch.Tensor, ops: tuple[str, ...], seed: int, per_example: bool = False) -> torch.Tensor:
    """`x` `[B, C, H, W]` with one randomly chosen operation of `ops` applied (identity when `ops` is empty)."""
    if not ops:
        return x
    generator = torch.Generator().manual_seed(seed)
    op = ops[torch.randint(len(ops), (1,), generator=generator).item()]
    n = len(x) if per_example else 1

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:  # [n, *shape], broadcast over the batch
        u = torch.rand(n, *shape, generator=generator).to(device=x.device, dtype=x.dtype)
        return low + (high - low) * u

    if op == "color":
        x = x + uniform(-0.5, 0.5, 1, 1, 1)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * uniform(0.0, 2.0, 1, 1, 1) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * uniform(0.5, 1.5, 1, 1, 1) + mean
    if op == "flip":
        return torch.where(uniform(0.0, 1.0, 1, 1, 1) < 0.5, x.flip(3), x)
    if op == "cutout":
        height, width = x.shape[-2:]
        half_h, half_w = height // 4, width // 4  # a square of half the side
        cy, cx = uniform(0, 1, 1, 1) * height, uniform(0, 1, 1, 1) * width
        rows = torch.arange(height, device=x.device, dtype=x.dtype).view(1, -1, 1)
        cols = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, -1)
        inside = ((rows - cy).abs() < half_h) & ((cols - cx).abs() < half_w)
        return x * (~inside).unsqueeze(1).to(x.dtype)
    # crop, scale and rotate are affine maps of the sampling grid (zeros outside the image)
    zero, one = torch.zeros(n, device=x.device, dtype=x.dtype), torch.ones(n, device=x.device, dtype=x.dtype)
    if op == "crop":
        tx, ty = uniform(-0.25, 0.25, 1).squeeze(1), uniform(-0.25, 0.25, 1).squeeze(1)  # 1/8 of the side, in [-1, 1]
        theta = torch.stack([torch.stack([one, zero, tx], 1), torch.stack([zero, one, ty], 1)], 1)
    elif op == "scale":
        sx, sy = (uniform(1 / 1.2, 1.2, 1).squeeze(1) for _ in range(2))
        theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    else:
        angle = uniform(-15.0, 15.0, 1).squeeze(1) * math.pi / 180
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    theta = theta.expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)
