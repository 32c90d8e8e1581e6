"""ONNX export of a bundle: the fusion model over encoder tokens, and the encoders where they export.

Why the TorchScript-based exporter (``dynamo=False``): the fusion model skips masking when a mask is
all True, a data-dependent branch that `torch.export` refuses; tracing with example masks that hold
padding records the masked path, which gives the same numbers when nothing is padded. Every export is
checked against torch with onnxruntime on random inputs before it is reported as done.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skyfuse.errors import ConfigError

#: Fusion inputs and outputs, in order. Masks are bool, True = real token.
FUSION_INPUTS = ("image_tokens", "image_mask", "text_tokens", "text_mask")
FUSION_OUTPUTS = ("logits", "fused")
ENCODER_OUTPUTS = ("tokens", "mask", "pooled")
DEFAULT_OPSET = 17


class FusionGraph(nn.Module):
    """The fusion model as plain tensors in, (logits, fused) out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_tokens: torch.Tensor,
        image_mask: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image_tokens, image_mask, text_tokens, text_mask)
        return out.logits, out.fused


class ImageEncoderGraph(nn.Module):
    """pixels (B, 3, S, S), already normalised -> tokens, mask, pooled."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tb = self.encoder.encode(pixels)
        return tb.tokens, tb.mask, tb.pooled


class TextEncoderGraph(nn.Module):
    """input_ids, attention_mask (B, L) int64 -> tokens, mask, pooled."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tb = self.encoder.encode({"input_ids": input_ids, "attention_mask": attention_mask})
        return tb.tokens, tb.mask, tb.pooled


@dataclass
class ExportResult:
    """One exported graph and how far onnxruntime is from torch on random inputs."""

    name: str
    path: Path | None
    max_abs_diff: float | None = None
    error: str | None = None


@dataclass
class ExportReport:
    results: list[ExportResult] = field(default_factory=list)
    metadata: Path | None = None

    @property
    def ok(self) -> bool:
        return bool(self.results) and self.results[0].error is None


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    """Eval mode during export and comparison, the caller's mode restored afterwards (the exporter
    restores the *wrapper's* mode, which would switch dropout back on in the wrapped model)."""
    if not isinstance(module, nn.Module):
        yield
        return
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def _padded_mask(b: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Random lengths >= 1 per row, one row fully padded when b > 2 (an edge case worth exporting)."""
    lengths = torch.randint(1, n + 1, (b,), generator=generator)
    lengths[0] = n
    if b > 1:
        lengths[1] = max(1, n // 2)
    mask = torch.arange(n)[None, :] < lengths[:, None]
    if b > 2:
        mask[2] = False
    return mask


def fusion_inputs(
    image_dim: int,
    text_dim: int,
    *,
    batch: int = 3,
    n_image: int = 9,
    n_text: int = 7,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random fusion inputs with padding in both masks."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, n_image, image_dim, generator=g),
        _padded_mask(batch, n_image, g),
        torch.randn(batch, n_text, text_dim, generator=g),
        _padded_mask(batch, n_text, g),
    )


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    out: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,  # type: ignore[arg-type]
            opset_version=opset,
            dynamo=False,
        )
    tmp.replace(out)


def compare_onnx(
    path: Path,
    fn: Callable[..., tuple[torch.Tensor, ...]],
    inputs: dict[str, torch.Tensor],
) -> float:
    """Max |onnxruntime - torch| over all outputs (bool outputs must match exactly)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in session.get_inputs()}
    feed = {k: v.numpy() for k, v in inputs.items() if k in feed_names}
    got = session.run(None, feed)
    with torch.no_grad():
        want = fn(*inputs.values())
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        w_np = w.detach().cpu().numpy()
        if w_np.dtype == np.bool_:
            if not np.array_equal(g.astype(bool), w_np):
                return float("inf")
            continue
        if g.shape != w_np.shape:
            return float("inf")
        worst = max(
            worst,
            float(np.max(np.abs(g.astype(np.float64) - w_np.astype(np.float64)), initial=0.0)),
        )
    return worst


def export_fusion(
    model: nn.Module, out: Path, *, image_dim: int, text_dim: int, opset: int = DEFAULT_OPSET
) -> ExportResult:
    """Export the fusion model (dynamic batch and token counts) and check it on fresh random inputs."""
    graph = FusionGraph(model).eval()
    with _eval_mode(model):
        _export(
            graph,
            fusion_inputs(image_dim, text_dim, seed=0),
            out,
            FUSION_INPUTS,
            FUSION_OUTPUTS,
            {
                "image_tokens": {0: "batch", 1: "image_tokens"},
                "image_mask": {0: "batch", 1: "image_tokens"},
                "text_tokens": {0: "batch", 1: "text_tokens"},
                "text_mask": {0: "batch", 1: "text_tokens"},
                "logits": {0: "batch"},
                "fused": {0: "batch"},
            },
            opset,
        )
        check = fusion_inputs(image_dim, text_dim, batch=4, n_image=16, n_text=11, seed=1)
        diff = compare_onnx(out, graph, dict(zip(FUSION_INPUTS, check, strict=True)))
    return ExportResult("fusion", out, diff)


def export_image_encoder(encoder: Any, out: Path, *, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export pixels -> (tokens, mask, pooled); input is normalised pixels at the encoder's size."""
    size = int(encoder.preprocess_cfg.size)
    graph = ImageEncoderGraph(encoder).eval()
    with _eval_mode(encoder):
        g = torch.Generator().manual_seed(0)
        _export(
            graph,
            (torch.randn(2, 3, size, size, generator=g),),
            out,
            ("pixels",),
            ENCODER_OUTPUTS,
            {
                "pixels": {0: "batch"},
                "tokens": {0: "batch"},
                "mask": {0: "batch"},
                "pooled": {0: "batch"},
            },
            opset,
        )
        diff = compare_onnx(out, graph, {"pixels": torch.randn(3, 3, size, size, generator=g)})
    return ExportResult("image_encoder", out, diff)


def export_text_encoder(encoder: Any, out: Path, *, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export (input_ids, attention_mask) -> (tokens, mask, pooled); tokenise with the saved tokenizer."""
    graph = TextEncoderGraph(encoder).eval()
    vocab = int(getattr(getattr(encoder, "tokenizer", None), "vocab_size", 1000) or 1000)

    def inputs(b: int, n: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        mask = _padded_mask(b, n, g)
        mask[:, 0] = True  # a tokenizer always emits at least the start token
        ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (b, n), generator=g) * mask
        return {"input_ids": ids.long(), "attention_mask": mask.long()}

    with _eval_mode(encoder):
        ex = inputs(2, 8, 0)
        _export(
            graph,
            (ex["input_ids"], ex["attention_mask"]),
            out,
            ("input_ids", "attention_mask"),
            ENCODER_OUTPUTS,
            {
                "input_ids": {0: "batch", 1: "text_tokens"},
                "attention_mask": {0: "batch", 1: "text_tokens"},
                "tokens": {0: "batch", 1: "text_tokens"},
                "mask": {0: "batch", 1: "text_tokens"},
                "pooled": {0: "batch"},
            },
            opset,
        )
        diff = compare_onnx(out, graph, inputs(3, 13, 1))
    return ExportResult("text_encoder", out, diff)


def export_bundle(
    model_dir: Path,
    out: Path,
    *,
    encoders: bool = True,
    image_encoder: Any | None = None,
    text_encoder: Any | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Export a bundle to ``out`` (the fusion model) plus ``<stem>.image_encoder.onnx``,
    ``<stem>.text_encoder.onnx``, the tokenizer folder and ``<stem>.json`` (class names, inputs,
    preprocessing) beside it. An encoder that fails to export is reported, not fatal; a fusion
    export outside `tolerance` raises."""
    from skyfuse.training.bundle import load_bundle

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"{out}: name the output file *.onnx")
    bundle = load_bundle(Path(model_dir))
    cfg = bundle.config
    report = ExportReport()
    fusion = export_fusion(
        bundle.model, out, image_dim=cfg.image_dim, text_dim=cfg.text_dim, opset=opset
    )
    report.results.append(fusion)
    if fusion.max_abs_diff is None or fusion.max_abs_diff > tolerance:
        raise ConfigError(
            f"{out}: exported fusion model differs from torch by {fusion.max_abs_diff} (> {tolerance});"
            " report this with the bundle's config"
        )
    meta: dict[str, Any] = {
        "format": "skyfuse-onnx",
        "version": 1,
        "fusion": {
            "file": out.name,
            "inputs": list(FUSION_INPUTS),
            "outputs": list(FUSION_OUTPUTS),
            "masks": "bool, True = real token",
            "config": cfg.model_dump(mode="json"),
        },
        "class_names": bundle.class_names,
        "image_encoder": bundle.image_encoder,
        "text_encoder": bundle.text_encoder,
        "prompt_id": bundle.prompt_id,
        # where the training captions came from: deployments must feed captions of this kind
        "caption_source": bundle.caption_source,
    }
    if encoders:
        from skyfuse.inference.predictor import build_encoder

        stem = out.with_suffix("")
        for kind, given, exporter in (
            ("image", image_encoder, export_image_encoder),
            ("text", text_encoder, export_text_encoder),
        ):
            path = stem.with_name(f"{stem.name}.{kind}_encoder.onnx")
            try:
                enc = (
                    given
                    if given is not None
                    else build_encoder(
                        getattr(bundle, f"{kind}_encoder"),
                        kind,
                        bundle.extra.get(f"{kind}_encoder_name"),
                    )
                )
                res = exporter(enc, path, opset=opset)
                if res.max_abs_diff is None or res.max_abs_diff > tolerance:
                    res.error = f"differs from torch by {res.max_abs_diff}"
                    path.unlink(missing_ok=True)
                    res.path = None
            except Exception as exc:  # an encoder that does not export is reported, not fatal
                path.unlink(missing_ok=True)
                res = ExportResult(
                    f"{kind}_encoder", None, None, f"{type(exc).__name__}: {str(exc)[:200]}"
                )
                enc = None
            report.results.append(res)
            entry: dict[str, Any] = {
                "file": res.path.name if res.path else None,
                "error": res.error,
            }
            if kind == "image" and enc is not None:
                p = enc.preprocess_cfg
                entry["preprocess"] = {"size": p.size, "mean": list(p.mean), "std": list(p.std)}
                entry |= {"inputs": ["pixels"], "outputs": list(ENCODER_OUTPUTS)}
            if kind == "text" and enc is not None:
                entry |= {
                    "inputs": ["input_ids", "attention_mask"],
                    "outputs": list(ENCODER_OUTPUTS),
                }
                entry["max_length"] = getattr(enc, "max_length", None)
                tok = getattr(enc, "tokenizer", None)
                if tok is not None and res.path is not None:
                    tok_dir = stem.with_name(f"{stem.name}.tokenizer")
                    tok.save_pretrained(str(tok_dir))
                    entry["tokenizer"] = tok_dir.name
            meta[f"{kind}_encoder_onnx"] = entry
    report.metadata = out.with_suffix(".json")
    report.metadata.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return report
