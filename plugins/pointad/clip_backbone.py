"""Frozen open_clip backbone for PointAD: loading, value-value attention and multi-layer tokens.

PointAD (like AnomalyCLIP) never changes CLIP's weights. What it changes is *how* the vision
tower is read:

* **Value-value (V-V) attention.** From block ``vv_start_layer`` on, every block computes, next to
  its ordinary self-attention, an attention in which queries and keys are replaced by the values
  (``softmax(V V^T / sqrt(d)) V``, same projections, same weights). The V-V outputs are summed into
  a *parallel* residual stream that skips the MLPs; the ordinary stream is left exactly as CLIP
  computes it, so the global (class-token) feature is unchanged while the patch tokens of the
  parallel stream keep their local semantics (CLIP's q-k attention lets every patch mix with the
  whole image).
* **Multi-layer patch tokens.** Patch tokens are taken after several blocks (default
  6, 12, 18, 24 of ViT-L/14; the same quarters of other depths) and each is projected into the
  joint image-text space with CLIP's own ``ln_post`` and ``proj``.

The text tower is run by :meth:`FrozenCLIP.encode_text_embeddings` on *embeddings* (not token
ids) so learnable prompt tokens can be placed in the input and, optionally, inside the first
blocks ("deep prompts").

Loading: any open_clip ViT model name, with ``pretrained`` a tag (``"openai"``), a local checkpoint
path, or ``None`` (random init, for tests). A model config dict (open_clip's ``embed_dim`` /
``vision_cfg`` / ``text_cfg``) or one of :data:`BUILTIN_CONFIGS` may be given instead of a name.
Weights that cannot be found or downloaded raise :class:`~anomalib_3d.errors.MissingWeightsError`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from anomalib_3d.errors import MissingWeightsError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Tiny random-init configurations: fast CPU tests, notebooks and benchmarks (never for results).
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "pointad-tiny-vit": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 112, "layers": 4, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 4},
    },
    "pointad-tiny-vit-224": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 224, "layers": 4, "width": 64, "head_width": 32, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 4},
    },
}


class VisionFeatures(tuple):
    """``(global_features (N, D), patch_tokens [L x (N, h*w, D)])`` of a batch of images."""

    __slots__ = ()

    def __new__(cls, global_features: Tensor, patch_tokens: list[Tensor]) -> VisionFeatures:  # noqa: D102
        return super().__new__(cls, (global_features, patch_tokens))

    @property
    def global_features(self) -> Tensor:
        """(N, D) projected class-token features (identical to CLIP's image embedding)."""
        return self[0]

    @property
    def patch_tokens(self) -> list[Tensor]:
        """One (N, h*w, D) tensor of projected patch tokens per selected layer."""
        return self[1]


def default_feature_layers(depth: int) -> tuple[int, ...]:
    """The quarters of the vision tower (1-based block indices): 6, 12, 18, 24 for 24 blocks.

    Args:
        depth: number of transformer blocks of the vision tower.

    Returns:
        Sorted unique block indices in ``[1, depth]``.
    """
    if depth < 1:
        msg = f"depth must be >= 1, got {depth}."
        raise ValueError(msg)
    return tuple(sorted({min(depth, max(1, round(depth * k / 4))) for k in range(1, 5)}))


def default_vv_start_layer(depth: int) -> int:
    """First V-V block (1-based) when none is given: block 6 of 24, the same quarter of other depths.

    AnomalyCLIP / PointAD (``DPAM_layer = 20``) give the last 19 of ViT-L's 24 blocks the V-V path,
    i.e. blocks 6..24, whatever feature layers are read. Other depths keep the start at a quarter
    of the tower: ``max(1, round(depth / 4))`` (3 of 12, 1 of 4).
    """
    if depth < 1:
        msg = f"depth must be >= 1, got {depth}."
        raise ValueError(msg)
    return max(1, round(depth / 4))


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or Path(value).suffix in {".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"}


def _missing_weights(
    model_name: str,
    pretrained: str,
    cause: BaseException | None,
    cache_dir: str | None,
) -> MissingWeightsError:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    sources = []
    if cfg.get("hf_hub"):
        sources.append(f"Hugging Face Hub 'hf-hub:{cfg['hf_hub'].rstrip('/')}'")
    if cfg.get("url"):
        sources.append(cfg["url"])
    where = " or ".join(sources) if sources else "its registered source"
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:300]})" if cause is not None else ""
    return MissingWeightsError(
        f"open_clip weights '{pretrained}' of model '{model_name}' are not cached and could not be downloaded"
        f"{reason}. open_clip downloads them from {where} into {cache}.",
        fix=(
            "connect to the internet once (or copy the Hugging Face cache from a machine that has it; unset "
            "HF_HUB_OFFLINE), or download the checkpoint yourself and pass its local path as pretrained="
            "'/path/to/open_clip_pytorch_model.bin' (model.pretrained in the config); pretrained=null gives "
            "random weights (tests only)"
        ),
    )


def _quick_gelu_for(model_name: str, pretrained: str | None) -> bool:
    """OpenAI weights were trained with QuickGELU; open_clip only warns, so decide here."""
    import open_clip

    if pretrained is None:
        return False
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if cfg:
        return bool(cfg.get("quick_gelu", False))
    # A local file: trust it to be the release of a known tag when its file name says so.
    name = Path(pretrained).name
    for tag in open_clip.list_pretrained_tags_by_model(model_name):
        tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
        urls = [tag_cfg.get("url", ""), tag_cfg.get("hf_hub", "")]
        if any(u and Path(u.rstrip("/")).name == name for u in urls) or (tag == "openai" and "openai" in name.lower()):
            return bool(tag_cfg.get("quick_gelu", False))
    return False


def load_open_clip(
    model: str | dict[str, Any] = "ViT-L-14-336",
    pretrained: str | None = "openai",
    *,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
) -> nn.Module:
    """Build an open_clip model and load its weights.

    Args:
        model: an open_clip model name (``open_clip.list_models()``), a name in
            :data:`BUILTIN_CONFIGS`, or a model config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        pretrained: a pretrained tag (``open_clip.list_pretrained_tags_by_model(name)``), the path of
            a local checkpoint, or ``None`` for random weights.
        quick_gelu: force QuickGELU on/off; ``None`` follows the pretrained tag (OpenAI weights use it).
        cache_dir: open_clip's download cache.

    Returns:
        The open_clip ``CLIP`` model (eval mode, on the CPU).

    Raises:
        MissingWeightsError: the weights are neither cached nor downloadable, or the local path
            does not exist.
        ValueError: unknown model name or pretrained tag.
    """
    import open_clip

    if isinstance(model, dict) or (isinstance(model, str) and model in BUILTIN_CONFIGS):
        name = model if isinstance(model, str) else "custom config"
        config = copy.deepcopy(BUILTIN_CONFIGS[model] if isinstance(model, str) else model)
        config.setdefault("quick_gelu", bool(quick_gelu))
        clip = open_clip.CLIP(**config)
        if pretrained is not None:
            if not Path(pretrained).is_file():
                raise MissingWeightsError(
                    f"checkpoint for the {name} backbone not found.",
                    path=pretrained,
                    fix="pass the path of an existing open_clip checkpoint, or pretrained=null for random weights",
                )
            open_clip.load_checkpoint(clip, pretrained)
        clip.visual.image_mean = getattr(clip.visual, "image_mean", None) or OPENAI_MEAN
        clip.visual.image_std = getattr(clip.visual, "image_std", None) or OPENAI_STD
        return clip.eval()

    if model not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if model.lower().split("-")[0] in m.lower()][:8]
        msg = (f"unknown open_clip model {model!r}. Choose a ViT from open_clip.list_models() "
               f"(e.g. {close or 'ViT-L-14-336'}), one of {sorted(BUILTIN_CONFIGS)}, or pass a model config dict.")
        raise ValueError(msg)
    if pretrained is not None:
        is_tag = bool(open_clip.get_pretrained_cfg(model, pretrained))
        if not is_tag:
            if Path(pretrained).is_file():
                pass
            elif _looks_like_path(pretrained):
                raise MissingWeightsError(
                    f"local checkpoint for open_clip model '{model}' not found.",
                    path=pretrained,
                    fix=f"check the path, or use a tag of {model} "
                    f"({', '.join(open_clip.list_pretrained_tags_by_model(model))})",
                )
            else:
                msg = (f"unknown pretrained tag {pretrained!r} for {model}; known tags: "
                       f"{open_clip.list_pretrained_tags_by_model(model)} (or pass a local checkpoint path).")
                raise ValueError(msg)
    use_quick_gelu = _quick_gelu_for(model, pretrained) if quick_gelu is None else quick_gelu
    try:
        clip = open_clip.create_model(model, pretrained=pretrained, force_quick_gelu=use_quick_gelu, cache_dir=cache_dir)
    except (RuntimeError, OSError, ConnectionError) as exc:
        if pretrained is not None and open_clip.get_pretrained_cfg(model, pretrained):
            raise _missing_weights(model, pretrained, exc, cache_dir) from exc
        raise
    return clip.eval()


@dataclass(frozen=True)
class _TextTower:
    """The text-tower pieces of a CLIP / CustomTextCLIP model, under one set of names."""

    token_embedding: nn.Embedding
    positional_embedding: Tensor
    blocks: nn.ModuleList
    ln_final: nn.Module
    text_projection: Tensor | nn.Linear | None
    attn_mask: Tensor | None
    pool_type: str
    eos_id: int | None


def _text_tower(clip: nn.Module) -> _TextTower:
    owner = getattr(clip, "text", None)
    if owner is None:
        owner = clip
        pool = getattr(clip, "text_pool_type", "argmax")
        eos = getattr(clip, "text_eos_id", None)
    else:
        if getattr(owner, "cls_emb", None) is not None or not hasattr(owner, "token_embedding"):
            msg = "PointAD needs a CLIP-style text tower (token embedding + causal transformer); this model has none."
            raise ValueError(msg)
        pool = getattr(owner, "pool_type", "argmax")
        eos = getattr(owner, "eos_id", None)
    return _TextTower(
        token_embedding=owner.token_embedding,
        positional_embedding=owner.positional_embedding,
        blocks=owner.transformer.resblocks,
        ln_final=owner.ln_final,
        text_projection=owner.text_projection,
        attn_mask=getattr(owner, "attn_mask", None),
        pool_type=pool,
        eos_id=eos,
    )


class FrozenCLIP(nn.Module):
    """A frozen open_clip model read the PointAD / AnomalyCLIP way.

    Args:
        model: open_clip model name, :data:`BUILTIN_CONFIGS` name or config dict.
        pretrained: tag, local checkpoint path or ``None`` (random init).
        feature_layers: 1-based blocks whose patch tokens are used; ``None`` = the quarters of the
            tower (6, 12, 18, 24 for ViT-L/14).
        vv_attention: compute the parallel value-value attention stream.
        vv_start_layer: first block (1-based) with V-V attention; ``None`` =
            :func:`default_vv_start_layer` (block 6 of 24, AnomalyCLIP's ``DPAM_layer = 20``),
            independent of ``feature_layers``.
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 elsewhere), ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        quick_gelu: see :func:`load_open_clip`.
        cache_dir: open_clip download cache.
        clip: an already built open_clip model (skips loading).
    """

    def __init__(
        self,
        model: str | dict[str, Any] = "ViT-L-14-336",
        pretrained: str | None = "openai",
        feature_layers: Sequence[int] | None = None,
        vv_attention: bool = True,
        vv_start_layer: int | None = None,
        precision: str = "auto",
        quick_gelu: bool | None = None,
        cache_dir: str | None = None,
        clip: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if clip is None:
            clip = load_open_clip(model, pretrained, quick_gelu=quick_gelu, cache_dir=cache_dir)
        self.clip = clip
        self.clip.requires_grad_(False)
        self.clip.eval()
        visual = self.clip.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            msg = f"PointAD needs an open_clip VisionTransformer; {type(visual).__name__} is not one."
            raise ValueError(msg)
        if getattr(visual, "attn_pool", None) is not None:
            msg = "vision towers with attentional pooling (CoCa) are not supported by PointAD."
            raise ValueError(msg)
        for block in visual.transformer.resblocks:
            if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
                msg = ("PointAD's value-value attention needs standard blocks with nn.MultiheadAttention "
                       f"(this model uses {type(block).__name__}).")
                raise ValueError(msg)
        if precision not in {"auto", "fp32", "fp16", "bf16"}:
            msg = f"precision must be 'auto', 'fp32', 'fp16' or 'bf16', got {precision!r}."
            raise ValueError(msg)
        self.precision = precision
        self.depth = len(visual.transformer.resblocks)
        layers = tuple(sorted(set(feature_layers))) if feature_layers else default_feature_layers(self.depth)
        bad = [layer for layer in layers if not 1 <= layer <= self.depth]
        if bad:
            msg = f"feature_layers {bad} outside the {self.depth} blocks of the vision tower (1-based)."
            raise ValueError(msg)
        self.feature_layers = layers
        # Independent of the layers read: feature_layers=[24] (the authors' MVTec runs) still
        # has V-V attention from block 6.
        start = default_vv_start_layer(self.depth) if vv_start_layer is None else int(vv_start_layer)
        if vv_attention and not 1 <= start <= self.depth:
            msg = f"vv_start_layer must lie in [1, {self.depth}], got {start}."
            raise ValueError(msg)
        self.vv_start_layer = start if vv_attention else None
        self.image_size = tuple(int(s) for s in _pair(visual.image_size))
        self.patch_size = tuple(int(s) for s in _pair(visual.patch_size))
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.embed_dim = int(visual.output_dim)
        mean = getattr(visual, "image_mean", None) or OPENAI_MEAN
        std = getattr(visual, "image_std", None) or OPENAI_STD
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.text = _text_tower(self.clip)
        self.text_width = int(self.text.token_embedding.weight.shape[1])
        self.text_depth = len(self.text.blocks)
        self.context_length = int(self.text.positional_embedding.shape[0])
        self.model_name = model if isinstance(model, str) else "custom"
        self.weights_id = "random" if pretrained is None else str(pretrained)

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Stay in eval mode: the backbone is frozen (no dropout / patch dropout ever)."""
        del mode
        return super().train(False)

    # ------------------------------------------------------------------------------------------
    # vision
    def _autocast(self, device: torch.device) -> torch.autocast | _NullContext:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        if self.precision == "auto":
            dtype = torch.float16 if device.type == "cuda" else None
        if dtype is None:
            return _NullContext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def normalize(self, images: Tensor) -> Tensor:
        """``(..., 3, H, W)`` images in ``[0, 1]`` → CLIP-normalised."""
        return (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)

    def prepare_images(self, images: Tensor, *, antialias: bool = False) -> Tensor:
        """Resize ``(N, 3, H, W)`` ``[0, 1]`` images to the backbone's input size (bicubic;
        ``antialias`` filters a downsizing first, as PIL's resize in the authors' pipeline) and normalise."""
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images.float(), size=self.image_size, mode="bicubic", align_corners=False,
                                   antialias=antialias).clamp(0, 1)
        return self.normalize(images.float())

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> VisionFeatures:
        """Global feature and multi-layer V-V patch tokens of normalised images.

        Args:
            images: ``(N, 3, H, W)`` CLIP-normalised images at :attr:`image_size`.

        Returns:
            :class:`VisionFeatures`: ``(N, D)`` and ``L x (N, h*w, D)`` in the joint space (dtype
            of the compute: float16 under CUDA autocast).
        """
        if tuple(images.shape[-2:]) != self.image_size:
            msg = (f"images must be {self.image_size} for this backbone, got {tuple(images.shape[-2:])}; "
                   "use prepare_images().")
            raise ValueError(msg)
        visual = self.clip.visual
        with self._autocast(images.device):
            x = _embed_patches(visual, images)
            vv: Tensor | None = None
            kept: dict[int, Tensor] = {}
            for index, block in enumerate(visual.transformer.resblocks, start=1):
                if self.vv_start_layer is not None and index >= self.vv_start_layer:
                    x, vv = _dual_block(block, x, vv)
                else:
                    x = block(x)
                if index in self.feature_layers:
                    kept[index] = vv if vv is not None else x
            if hasattr(visual, "_pool"):
                pooled, _ = visual._pool(x)  # noqa: SLF001 - open_clip's own pooling keeps CLIP's embedding exact
            else:
                pooled = visual.ln_post(x)[:, 0]
            global_features = pooled @ visual.proj
            patch_tokens = [visual.ln_post(kept[layer][:, 1:]) @ visual.proj for layer in self.feature_layers]
        return VisionFeatures(global_features, patch_tokens)

    # ------------------------------------------------------------------------------------------
    # text
    def embed_tokens(self, token_ids: Tensor) -> Tensor:
        """``(P, T)`` token ids → ``(P, T, W)`` frozen token embeddings."""
        with torch.no_grad():
            return self.text.token_embedding(token_ids)

    def encode_text_embeddings(
        self,
        embeddings: Tensor,
        token_ids: Tensor,
        deep_prompts: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Run the text tower on prompt *embeddings*, optionally replacing tokens inside blocks.

        Args:
            embeddings: ``(P, T, W)`` input token embeddings (learnable context already placed).
            token_ids: ``(P, T)`` the token ids the prompts were built from (for end-of-text pooling).
            deep_prompts: ``J`` tensors of shape ``(K, W)``; before block ``j`` (``1 <= j <= J``, 0-based
                block index) the tokens at positions ``1 .. K`` are replaced by ``deep_prompts[j - 1]``.

        Returns:
            ``(P, D)`` text features (not normalised). Differentiable w.r.t. ``embeddings`` and
            ``deep_prompts``.
        """
        tower = self.text
        length = embeddings.shape[1]
        x = embeddings + tower.positional_embedding[:length].to(embeddings.dtype)
        mask = tower.attn_mask
        if mask is not None:
            mask = mask[:length, :length].to(device=x.device, dtype=x.dtype)
        deep = list(deep_prompts) if deep_prompts is not None else []
        if len(deep) >= len(tower.blocks):
            msg = f"{len(deep)} deep prompt layers for a {len(tower.blocks)}-block text tower."
            raise ValueError(msg)
        for index, block in enumerate(tower.blocks):
            if 1 <= index <= len(deep):
                tokens = deep[index - 1].to(x.dtype)
                count = tokens.shape[0]
                x = torch.cat([x[:, :1], tokens.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + count :]], dim=1)
            x = block(x, attn_mask=mask)
        x = tower.ln_final(x)
        if tower.pool_type == "eos" and tower.eos_id is not None:
            end = (token_ids == tower.eos_id).int().argmax(dim=-1)
        else:  # CLIP's BPE gives the end-of-text token the largest id
            end = token_ids.argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), end]
        projection = tower.text_projection
        if projection is None:
            return pooled
        if isinstance(projection, nn.Linear):
            return projection(pooled)
        return pooled @ projection


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _embed_patches(visual: nn.Module, images: Tensor) -> Tensor:
    if hasattr(visual, "_embeds"):
        return visual._embeds(images)  # noqa: SLF001 - open_clip's own embedding (class token, positions, ln_pre)
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def _dual_block(block: nn.Module, x: Tensor, vv: Tensor | None) -> tuple[Tensor, Tensor]:
    """One block on the ordinary stream ``x`` plus its V-V attention added to the parallel stream.

    Both attentions read ``ln_1`` of the *ordinary* stream and share the block's projections; the
    parallel stream starts as a copy of ``x`` at the first V-V block and never goes through an MLP.
    """
    attn: nn.MultiheadAttention = block.attn
    batch, tokens, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    h = block.ln_1(x)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    # One fused call for both attentions: (q, k, v) for CLIP's own path, (v, v, v) for V-V.
    out = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
    out = out.transpose(1, 2).reshape(2 * batch, tokens, width)
    out = F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    ordinary, value_value = out[:batch], out[batch:]
    ls_1 = getattr(block, "ls_1", nn.Identity())
    vv = (x if vv is None else vv) + ls_1(value_value)
    x = x + ls_1(ordinary)
    ls_2 = getattr(block, "ls_2", nn.Identity())
    x = x + ls_2(block.mlp(block.ln_2(x)))
    return x, vv


__all__ = [
    "BUILTIN_CONFIGS",
    "FrozenCLIP",
    "VisionFeatures",
    "default_feature_layers",
    "default_vv_start_layer",
    "load_open_clip",
]
