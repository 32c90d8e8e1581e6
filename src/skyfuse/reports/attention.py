"""Attention pictures: where the caption's words look on the image, and which words the regions read.

Why: the dual model's claim to interpretability rests on its two attention directions. Text-to-image
weights (words x regions) become a heat map over the image grid; image-to-text weights (regions x
words) become a weight per word. Maps are averaged over heads and fusion levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Tokenizer bookkeeping tokens, never shown as "the words the image attends to".
SPECIAL_TOKENS = frozenset(
    {"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>", "<|startoftext|>", "<|endoftext|>"}
)


def infer_grid(n_tokens: int) -> tuple[int, int, int] | None:
    """(rows, cols, offset) of a square token grid: n = side², or 1 + side² with a leading CLS token."""
    for offset in (0, 1):
        side = math.isqrt(max(0, n_tokens - offset))
        if side > 0 and side * side == n_tokens - offset:
            return side, side, offset
    return None


def _maps(explanation: Any, kind: str) -> list[np.ndarray]:
    maps: dict[str, np.ndarray] = getattr(explanation, "maps", {}) or {}
    return [
        np.asarray(m, dtype=np.float64)
        for k, m in sorted(maps.items())
        if k.rsplit(".", 1)[-1] == kind
    ]


def region_heatmap(explanation: Any, word: int | Sequence[int] | None = None) -> np.ndarray | None:
    """(rows, cols) map in 0..1 of text-to-image attention: all real words (mean), one token index, or
    the mean of several (the pieces of one word).

    None when the model has no text-to-image attention or its image tokens are not a square grid.
    """
    maps = _maps(explanation, "t2i")
    if not maps:
        return None
    att = np.mean(np.stack(maps), axis=0)  # (L, N)
    grid = infer_grid(att.shape[1])
    if grid is None or att.shape[0] == 0:
        return None
    rows, cols, offset = grid
    if word is None:
        vec = att.mean(axis=0)
    elif isinstance(word, int):
        vec = att[word]
    else:
        vec = att[[int(i) for i in word]].mean(axis=0)
    heat = vec[offset:].reshape(rows, cols)
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def word_weights(explanation: Any) -> list[tuple[str, float]] | None:
    """(word, weight) per caption token: image-to-text attention averaged over regions (sums to 1)."""
    maps = _maps(explanation, "i2t")
    if not maps:
        return None
    att = np.mean(np.stack(maps), axis=0)  # (N, L)
    if att.shape[0] == 0:
        return None
    weights = att.mean(axis=0)
    words = list(getattr(explanation, "words", []) or [])
    words = (words + [f"tok{i}" for i in range(len(words), len(weights))])[: len(weights)]
    return [(w, float(x)) for w, x in zip(words, weights, strict=True)]


#: Words every caption uses: never the word worth a picture of its own.
_STOP_TEXT = """
a an the and or of in on at to by for from with without into over under near next along is are
was were be been can could may might it its this that these those there their some several many
multiple various other also which while where as image picture photo scene view shows overall
appears visible classified
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def word_groups(words: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Whole words from tokenizer pieces: ``tar`` + ``##mac`` -> ("tarmac", [i, i + 1]).

    Special tokens are left out, so a picture never shows ``[CLS]`` or a half word."""
    groups: list[tuple[str, list[int]]] = []
    for i, tok in enumerate(words):
        if tok in SPECIAL_TOKENS:
            continue
        if tok.startswith("##") and groups and groups[-1][1][-1] == i - 1:
            text, idx = groups[-1]
            groups[-1] = (text + tok[2:], [*idx, i])
        else:
            groups.append((tok.lstrip("\u0120\u2581"), [i]))
    return groups


def top_words(explanation: Any, k: int = 3) -> list[int]:
    """First token indices of the k caption words (no special tokens, punctuation, short or stop
    words; pieces joined) whose text-to-image attention is most concentrated: the words that look at
    one place, not everywhere."""
    maps = _maps(explanation, "t2i")
    if not maps:
        return []
    att = np.mean(np.stack(maps), axis=0)
    words = list(getattr(explanation, "words", []) or [])
    words += [f"tok{i}" for i in range(len(words), att.shape[0])]
    scored = []
    for text, idx in word_groups(words[: att.shape[0]]):
        if not _is_content_word(text):
            continue
        row = att[idx].mean(axis=0)
        scored.append((float(row.max() - row.mean()), idx[0]))
    scored.sort(key=lambda t: -t[0])
    return [i for _, i in scored[:k]]


def _is_content_word(word: str) -> bool:
    """Worth a picture of its own: letters, at least three of them, and not a stop word."""
    core = word.lstrip("#").lstrip("\u0120")
    return (
        word not in SPECIAL_TOKENS
        and sum(c.isalpha() for c in core) >= 3
        and core.lower() not in STOP_WORDS
    )


def merged_word_weights(explanation: Any) -> list[tuple[str, float]] | None:
    """`word_weights` per whole word (pieces summed), without special tokens or punctuation."""
    weights = word_weights(explanation)
    if weights is None:
        return None
    values = [x for _, x in weights]
    return [
        (text, float(sum(values[i] for i in idx)))
        for text, idx in word_groups([w for w, _ in weights])
        if any(c.isalnum() for c in text)
    ]


def _colormap(heat: np.ndarray, name: str) -> np.ndarray:
    from matplotlib import colormaps

    return np.asarray(colormaps[name](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0, dtype=np.uint8)


def overlay(
    image: Image.Image, heat: np.ndarray, *, alpha: float = 0.5, cmap: str = "inferno"
) -> Image.Image:
    """Blend a 0..1 heat map (any grid size, upsampled smoothly) over the image."""
    base = image.convert("RGB")
    small = Image.fromarray(np.asarray(np.clip(heat, 0, 1) * 255.0, dtype=np.uint8), mode="L")
    up = np.asarray(small.resize(base.size, Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    colour = Image.fromarray(_colormap(up, cmap), mode="RGB")
    return Image.blend(base, colour, alpha)


def plot_explanation(
    image: Image.Image,
    explanation: Any,
    out_png: Path,
    *,
    title: str | None = None,
    caption: str | None = None,
    n_words: int = 3,
) -> Path | None:
    """One figure: the image, the mean text-to-image overlay, overlays of the most focused words, and
    the words ranked by the attention image regions pay them. None when there is no attention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = region_heatmap(explanation)
    weights = merged_word_weights(explanation)
    if heat is None and weights is None:
        return None
    words = list(getattr(explanation, "words", []) or [])
    groups = {idx[0]: (text, idx) for text, idx in word_groups(words)}
    picks = top_words(explanation, n_words) if heat is not None else []
    n_img = 1 + (1 if heat is not None else 0) + len(picks)
    fig = plt.figure(figsize=(3.2 * n_img + 0.8, 6.6 if weights else 3.8), dpi=100)
    rows = 2 if weights else 1
    panels: list[tuple[str, Image.Image]] = [("image", image.convert("RGB"))]
    if heat is not None:
        panels.append(("all words -> regions", overlay(image, heat)))
        for i in picks:
            label, idx = groups.get(i, (words[i] if i < len(words) else f"tok{i}", [i]))
            h = region_heatmap(explanation, word=idx)
            if h is not None:
                panels.append((f"'{label}' -> regions", overlay(image, h)))
    heat_axes = []
    for j, (name, pic) in enumerate(panels):
        ax = fig.add_subplot(rows, len(panels), j + 1)
        ax.imshow(pic)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        if j > 0:
            heat_axes.append(ax)
    if weights:
        ax = fig.add_subplot(rows, 1, 2)
        shown = weights[:40]
        ax.bar(range(len(shown)), [x for _, x in shown], color="#2f6fdf")
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([w for w, _ in shown], rotation=70, fontsize=8)
        ax.set_ylabel("attention from regions")
        ax.set_title("which words the image regions attend to (image -> text)", fontsize=9)
    if title or caption:
        text = title or ""
        if caption:
            short = caption if len(caption) <= 140 else caption[:137] + "..."
            text = f"{text}\n{short}" if text else short
        fig.suptitle(text, fontsize=9)
    fig.tight_layout()
    if heat_axes:
        # one scale for every overlay: each map is stretched to its own min..max
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.colorbar(
            ScalarMappable(Normalize(0.0, 1.0), cmap="inferno"),
            ax=heat_axes,
            fraction=0.025,
            pad=0.01,
            ticks=[0.0, 1.0],
        )
        bar.ax.set_yticklabels(["least", "most"], fontsize=8)
        bar.set_label("attention (per map)", fontsize=8)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return out_png


def save_overlays(
    image: Image.Image, explanation: Any, out_dir: Path, stem: str, words: Sequence[int] = ()
) -> list[Path]:
    """Plain overlay PNGs at image resolution (mean over words, then each chosen word)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    heat = region_heatmap(explanation)
    if heat is None:
        return paths
    p = out_dir / f"{stem}.overlay.png"
    overlay(image, heat).save(p)
    paths.append(p)
    for i in words:
        h = region_heatmap(explanation, word=i)
        if h is not None:
            p = out_dir / f"{stem}.word{i}.png"
            overlay(image, h).save(p)
            paths.append(p)
    return paths
