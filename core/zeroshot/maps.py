"""Where in the image a label is: patch and occlusion heat maps, and their overlay on the image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from core.errors import QueryError
from core.models.clip import ClipEmbedder
from core.types import Vector

# =============================================================================================
# Where in the image: heat maps
# =============================================================================================

WHERE_METHODS = ("patch", "occlusion")


def _square_input(embedder: ClipEmbedder, image: Image.Image) -> torch.Tensor:
    """The whole image as a (1, 3, S, S) model input.

    The classifier's preprocessing center-crops, which would leave the sides of a wide image out
    of the map; here the whole image is resized to the model's square input instead (the aspect
    ratio is not kept; CLIP tolerates that well), so every map cell covers a known part of the
    image and the map stretches back over it exactly.
    """
    height, width = embedder.preprocess(Image.new("RGB", (32, 32))).shape[-2:]
    squashed = image.convert("RGB").resize((int(width), int(height)), Image.Resampling.BICUBIC)
    # Resize and center-crop are no-ops on an image of the input size; only the normalization
    # (and whatever else the model's transform does) applies.
    return embedder.preprocess(squashed).unsqueeze(0)


def where_map(
    embedder: ClipEmbedder,
    image: Image.Image,
    label_vector: Vector,
    method: str = "patch",
    *,
    grid: int = 7,
    batch_size: int = 16,
) -> np.ndarray:
    """Where in the image the label is: an (H', W') float32 map, higher = more of the label.

    The whole image is resized to the model's square input (see `_square_input`), so the map
    covers the whole image; `overlay` stretches it back.

    label_vector: (dim,) the label's unit text vector, e.g. a row of `label_embeddings`.
    method:
      "patch"      cosine similarity of each patch token with the label vector. Patch tokens are
                   projected as the pooled token is (ln_post, then proj), so they live in the
                   joint space. Cost: 1 image forward pass. Map: the ViT's patch grid (7 x 7 for
                   ViT-B-32 at 224 px). Needs a ViT image tower without attentional pooling.
                   CLIP was trained on the pooled token only, so patch similarities are noisy
                   and may favour background; a quick, rough view.
      "occlusion"  drop in the image's similarity to the label when one cell of a `grid` x
                   `grid` partition is covered with the mean colour of CLIP's training images (a
                   neutral gray: zero after normalization). Cost: 1 + grid^2 image forward passes
                   (50 for grid 7), in batches of `batch_size`. Map: (grid, grid). Works with any
                   image tower and measures what the pooled embedding actually uses; may be
                   negative where covering a cell makes the image look more like the label.

    Raises:
        QueryError: unknown method, bad grid, wrong vector size, or "patch" on a model that
            has no patch tokens.
    """
    if method not in WHERE_METHODS:
        raise QueryError(f"unknown method '{method}'; one of {', '.join(WHERE_METHODS)}")
    vector = np.asarray(label_vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != embedder.dim:
        raise QueryError(
            f"label vector has {vector.shape[0]} values; this model needs {embedder.dim}"
        )
    x = _square_input(embedder, image)
    if method == "patch":
        return _patch_map(embedder, x, vector)
    if not (isinstance(grid, int) and 1 <= grid <= 32):
        raise QueryError(f"grid must be a whole number from 1 to 32, not {grid!r}")
    return _occlusion_map(embedder, x, vector, grid, batch_size)


def _patch_map(embedder: ClipEmbedder, x: torch.Tensor, vector: np.ndarray) -> np.ndarray:
    from open_clip.transformer import VisionTransformer

    visual = getattr(embedder.model, "visual", None)
    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
        raise QueryError(
            "patch maps need a ViT image tower with plain patch tokens, which this model does "
            "not have; use the occlusion method"
        )
    grid_h, grid_w = (int(v) for v in visual.grid_size)
    with embedder._lock, torch.inference_mode():
        # open_clip returns (pooled, tokens) when output_tokens is set; it is a constructor flag,
        # so it is switched on for this one call only, under the lock every forward pass takes.
        previous = visual.output_tokens
        visual.output_tokens = True
        try:
            _, tokens = visual(x.to(embedder.device))
        finally:
            visual.output_tokens = previous
        if visual.final_ln_after_pool:  # then ln_post was applied to the pooled token only
            tokens = visual.ln_post(tokens)
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        tokens = torch.nn.functional.normalize(tokens.float(), dim=-1)[0].cpu().numpy()
    if tokens.shape[0] != grid_h * grid_w:
        raise QueryError(
            "patch maps need one token per patch, which this model does not return; use the "
            "occlusion method"
        )
    return (tokens @ vector).reshape(grid_h, grid_w).astype(np.float32)


def _occlusion_map(
    embedder: ClipEmbedder, x: torch.Tensor, vector: np.ndarray, grid: int, batch_size: int
) -> np.ndarray:
    height, width = x.shape[-2:]
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    # The unmasked image rides in the first batch: 1 + grid^2 passes in all.
    inputs: list[torch.Tensor] = [x[0]]
    for r, c in cells:
        masked = x[0].clone()
        masked[:, rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = 0.0
        inputs.append(masked)
    sims = np.concatenate(
        [
            embedder.embed_tensors(torch.stack(inputs[i : i + batch_size])) @ vector
            for i in range(0, len(inputs), max(1, batch_size))
        ]
    )
    return (sims[0] - sims[1:]).reshape(grid, grid).astype(np.float32)


# A perceptually ordered dark-to-bright heat palette (near black, purple, red, orange, pale yellow).
_HEAT_STOPS = np.array(
    [
        [0.0, 0, 0, 4],
        [0.25, 87, 16, 110],
        [0.5, 188, 55, 84],
        [0.75, 249, 142, 9],
        [1.0, 252, 255, 164],
    ],
    dtype=np.float64,
)
_HEAT_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), _HEAT_STOPS[:, 0], _HEAT_STOPS[:, k]) for k in (1, 2, 3)],
    axis=1,
).astype(np.uint8)  # (256, 3)


def overlay(image: Image.Image, heat: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """The image with a heat map over it: an RGB image of the image's size.

    The map is scaled to [0, 1] (its minimum to its maximum: the colours show where, not how
    much; a flat map is all dark), stretched to the image with bilinear interpolation, coloured
    with a dark-to-bright palette, and blended: 0 = the image only, 1 = the heat map only.
    """
    if not (isinstance(opacity, int | float) and 0.0 <= opacity <= 1.0):
        raise QueryError(f"opacity must be a number from 0 to 1, not {opacity!r}")
    values = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim != 2 or values.size == 0:
        raise QueryError(f"a heat map must be a 2-D array, not shape {values.shape}")
    low, high = values.min(), values.max()
    unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
    base = image.convert("RGB")
    stretched = Image.fromarray(unit.astype(np.float32)).resize(
        base.size, Image.Resampling.BILINEAR
    )
    index = np.clip(np.asarray(stretched) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colored = Image.fromarray(_HEAT_LUT[index])
    return Image.blend(base, colored, float(opacity))


def where_map_cost(method: str, grid: int = 7) -> int:
    """Image forward passes `where_map(method=..., grid=...)` makes: 1, or 1 + grid^2."""
    if method not in WHERE_METHODS:
        raise QueryError(f"unknown method '{method}'; one of {', '.join(WHERE_METHODS)}")
    return 1 if method == "patch" else 1 + grid * grid
