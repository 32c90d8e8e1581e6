"""An export as data: `skyfuse export`'s checks (format, opset) before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skyfuse.export.onnx import ExportReport


def opset_range() -> tuple[int, int]:
    """Opsets these models export to: 14 (scaled-dot-product attention) up to torch's newest."""
    try:
        from torch.onnx import _constants

        high = int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - private module moved
        high = 20
    return 14, high


@dataclass(frozen=True)
class ExportJob:
    """One bundle to ONNX; encoder names/folders replace the bundle's own encoders."""

    model_dir: Path
    out: Path
    fmt: str = "onnx"
    encoders: bool = True
    opset: int = 17
    image_encoder: str | None = None
    text_encoder: str | None = None

    def check(self) -> None:
        """Refuse an unknown format or an opset this torch cannot write (ConfigError)."""
        from skyfuse.errors import ConfigError

        if self.fmt.lower() != "onnx":
            raise ConfigError(f"unknown export format {self.fmt!r}; supported: onnx")
        low, high = opset_range()
        if not low <= self.opset <= high:
            raise ConfigError(
                f"--opset {self.opset}: this torch exports opsets {low}..{high} of these models"
                " (attention needs 14); the default 17 suits onnxruntime >= 1.12"
            )


@dataclass
class PreparedExport:
    """A checked job with its bundle folder and encoder overrides, ready to `run`."""

    job: ExportJob
    model_dir: Path
    encoder_kw: dict[str, Any]

    def run(self) -> ExportReport:
        """Export and compare every graph with torch on random inputs."""
        from skyfuse.export.onnx import export_bundle

        job = self.job
        return export_bundle(
            self.model_dir, job.out, encoders=job.encoders, opset=job.opset, **self.encoder_kw
        )


def prepare_export(job: ExportJob) -> PreparedExport:
    """Resolve the bundle, `job.check()` and build encoder overrides; nothing is written yet."""
    from skyfuse.inference.job import encoder_overrides
    from skyfuse.inference.loading import resolve_model_dir

    model_dir = resolve_model_dir(job.model_dir)
    job.check()
    kw = encoder_overrides(job.image_encoder, job.text_encoder) if job.encoders else {}
    return PreparedExport(job, model_dir, kw)


__all__ = ["ExportJob", "PreparedExport", "opset_range", "prepare_export"]
