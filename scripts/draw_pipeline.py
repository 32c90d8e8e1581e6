"""Draw docs/img/pipeline.png, the picture at the top of the README (run: python scripts/draw_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOXES = {
    "images": (0.0, 0.60, "image folder\n(UCM, AID, NWPU,\nWHU-RS19, your own)", "#dfe9f5"),
    "vlm": (
        0.23,
        0.80,
        "VLM captioner\n(vLLM / Ollama / OpenAI API,\ntransformers, files, attributes)",
        "#fbe5c8",
    ),
    "store": (0.48, 0.80, "caption store\n(JSONL, resumable,\nleakage audit)", "#fbe5c8"),
    "ienc": (0.23, 0.36, "image encoder\n(EfficientNet-Lite0,\nViT, CLIP)", "#dff0d8"),
    "tenc": (0.48, 0.56, "text encoder\n(MiniLM, CLIP text,\nBERT)", "#dff0d8"),
    "dual": (0.72, 0.46, "dual cross-attention\ntext → image\nimage → text", "#e8dff5"),
    "cls": (0.96, 0.62, "scene class\n(OA, AA, kappa)", "#f5dfe3"),
    "zs": (0.96, 0.30, "zero-shot:\nunseen classes\nby description", "#f5dfe3"),
}
EDGES = [
    ("images", "vlm"),
    ("vlm", "store"),
    ("images", "ienc"),
    ("store", "tenc"),
    ("ienc", "dual"),
    ("tenc", "dual"),
    ("dual", "cls"),
    ("dual", "zs"),
]
W, H = 0.2, 0.15


def main(out: Path = Path(__file__).resolve().parents[1] / "docs" / "img" / "pipeline.png") -> None:
    fig, ax = plt.subplots(figsize=(12, 4.2), dpi=110)
    ax.set_axis_off()
    ax.set_xlim(-0.01, 1.17)
    ax.set_ylim(0.2, 0.97)
    centres = {}
    patches = {}
    for key, (x, y, text, colour) in BOXES.items():
        patch = FancyBboxPatch((x, y), W, H, boxstyle="round,pad=0.01", fc=colour, ec="#444", lw=1)
        ax.add_patch(patch)
        patches[key] = patch
        ax.text(x + W / 2, y + H / 2, text, ha="center", va="center", fontsize=8.5)
        centres[key] = (x + W / 2, y + H / 2)
    for a, b in EDGES:
        ax.add_patch(
            FancyArrowPatch(
                centres[a],
                centres[b],
                patchA=patches[a],
                patchB=patches[b],
                arrowstyle="-|>",
                mutation_scale=14,
                color="#333",
                lw=1.2,
            )
        )
    ax.text(
        0.36, 0.24, "frozen features are cached on disk (safetensors)", fontsize=8, color="#555"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()
