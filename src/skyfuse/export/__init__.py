"""Export for deployment without skyfuse: ONNX graphs of the fusion model and the encoders."""

from __future__ import annotations

from skyfuse.export.job import ExportJob, prepare_export
from skyfuse.export.onnx import (
    ExportReport,
    ExportResult,
    export_bundle,
    export_fusion,
    export_image_encoder,
    export_text_encoder,
)

__all__ = [
    "ExportJob",
    "ExportReport",
    "ExportResult",
    "export_bundle",
    "export_fusion",
    "export_image_encoder",
    "export_text_encoder",
    "prepare_export",
]
