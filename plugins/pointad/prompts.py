"""Learnable text prompts of PointAD (object-agnostic, as AnomalyCLIP, or object-aware, as CoOp).

Two templates are learned, one for normality and one for abnormality (paper §3.5)::

    PointAD       g_n = [V1] ... [VE] [object]            g_a = [W1] ... [WE] [damaged] [object]
    PointAD-CoOp  g_n = [V1] ... [VE] [cls]               g_a = [W1] ... [WE] [damaged] [cls]

``[Vi]`` / ``[Wi]`` are free word embeddings (``E = 12``); ``[object]`` / ``[damaged]`` / ``[cls]``
are CLIP's frozen embeddings of those words. The object-agnostic variant keeps the literal word
"object", so the prompts carry no class semantics and transfer to unseen objects; the object-aware
variant (PointAD-CoOp) writes the class name instead.

*Deep prompts* (AnomalyCLIP): in the first ``deep_prompt_depth - 1`` blocks after the first one,
the ``K`` tokens right after the start token are replaced by free per-block embeddings, shared by
both templates. Only the embeddings of this module are trainable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anomalib_3d.settings import check_at_least
from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP

NORMAL_WORDS = "{object}."
ABNORMAL_WORDS = "damaged {object}."


class PromptLearner(nn.Module):
    """The learnable normality / abnormality prompts and their text features.

    Args:
        backbone: the frozen CLIP; only its tokenizer-compatible width and text tower are used
            (it is *not* registered as a sub-module here).
        prompt_length: ``E``, learnable words per template (12 in the paper).
        object_agnostic: ``True`` = PointAD (word "object"); ``False`` = PointAD-CoOp (class names).
        deep_prompts: insert learnable tokens inside the text tower.
        deep_prompt_length: ``K`` tokens replaced per block (4 in AnomalyCLIP), ``K <= E``.
        deep_prompt_depth: blocks ``1 .. depth - 1`` (0-based) get new tokens; ``None`` = three quarters
            of the text tower (9 of CLIP's 12 blocks, AnomalyCLIP's setting).
        init_std: standard deviation of the normal initialisation.
        tokenizer: callable ``list[str] -> (P, T) long``; default open_clip's CLIP BPE tokenizer with
            the backbone's context length.
    """

    def __init__(
        self,
        backbone: FrozenCLIP,
        prompt_length: int = 12,
        object_agnostic: bool = True,
        deep_prompts: bool = True,
        deep_prompt_length: int = 4,
        deep_prompt_depth: int | None = None,
        init_std: float = 0.02,
        tokenizer: object | None = None,
    ) -> None:
        super().__init__()
        check_at_least("prompt_length", prompt_length, 1)
        width = backbone.text_width
        self.prompt_length = int(prompt_length)
        self.object_agnostic = bool(object_agnostic)
        self.normal_context = nn.Parameter(torch.randn(prompt_length, width) * init_std)
        self.abnormal_context = nn.Parameter(torch.randn(prompt_length, width) * init_std)
        self.deep = nn.ParameterList()
        if deep_prompts:
            if not 1 <= deep_prompt_length <= prompt_length:
                msg = f"deep_prompt_length must lie in [1, prompt_length={prompt_length}], got {deep_prompt_length}."
                raise ValueError(msg)
            if deep_prompt_depth is None:
                deep_prompt_depth = max(2, round(0.75 * backbone.text_depth))
            if not 2 <= deep_prompt_depth <= backbone.text_depth:
                msg = f"deep_prompt_depth must lie in [2, {backbone.text_depth}] (text blocks), got {deep_prompt_depth}."
                raise ValueError(msg)
            for _ in range(deep_prompt_depth - 1):
                self.deep.append(nn.Parameter(torch.randn(deep_prompt_length, width) * init_std))
        if tokenizer is None:
            from open_clip.tokenizer import SimpleTokenizer

            tokenizer = SimpleTokenizer(context_length=backbone.context_length)
        self._tokenizer = tokenizer
        # Frozen token embeddings of the templates, per class name (not state: rebuilt on demand).
        self._template_cache: dict[tuple[str, str, torch.device], tuple[Tensor, Tensor]] = {}

    def _template(self, backbone: FrozenCLIP, class_name: str, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(token ids (2, T), frozen embeddings (2, T, W))`` of the normal and abnormal template."""
        key = (class_name, backbone.model_name, device)
        if key not in self._template_cache:
            placeholder = " ".join(["X"] * self.prompt_length)
            texts = [f"{placeholder} {NORMAL_WORDS.format(object=class_name)}",
                     f"{placeholder} {ABNORMAL_WORDS.format(object=class_name)}"]
            ids = torch.as_tensor(self._tokenizer(texts)).long().to(device)
            self._template_cache[key] = (ids, backbone.embed_tokens(ids).detach())
        return self._template_cache[key]

    def class_words(self, class_names: Sequence[str] | None) -> list[str]:
        """Words written into the templates: ``["object"]`` for the agnostic variant, else cleaned names."""
        if self.object_agnostic or not class_names:
            return ["object"]
        return [name.replace("_", " ").strip() or "object" for name in class_names]

    def forward(self, backbone: FrozenCLIP, class_names: Sequence[str] | None = None) -> Tensor:
        """Text features of the prompts.

        Args:
            backbone: the frozen CLIP whose text tower encodes the prompts.
            class_names: ``C`` class names (object-aware variant); ignored when object-agnostic.

        Returns:
            ``(C, 2, D)`` L2-normalised features, ``[:, 0]`` normal and ``[:, 1]`` abnormal
            (``C = 1`` for the object-agnostic variant).
        """
        device = self.normal_context.device
        words = self.class_words(class_names)
        ids, embeddings = zip(*(self._template(backbone, w, device) for w in words), strict=True)
        token_ids = torch.cat(ids)  # (2C, T) rows: normal_0, abnormal_0, normal_1, ...
        frozen = torch.cat(embeddings)
        context = torch.stack([self.normal_context, self.abnormal_context]).repeat(len(words), 1, 1)
        start = frozen[:, :1]
        rest = frozen[:, 1 + self.prompt_length :]
        prompts = torch.cat([start, context.to(frozen.dtype), rest], dim=1)
        features = backbone.encode_text_embeddings(prompts, token_ids, list(self.deep) if len(self.deep) else None)
        features = features / features.norm(dim=-1, keepdim=True)
        return features.view(len(words), 2, -1)


__all__ = ["PromptLearner"]
