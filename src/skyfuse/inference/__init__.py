"""Inference: a trained bundle as a `Predictor`, batch prediction to files with resume."""

from __future__ import annotations

from skyfuse.inference.batch import (
    CaptionLookup,
    InputImage,
    PredictSummary,
    collect_inputs,
    predict_files,
)
from skyfuse.inference.loading import (
    ZeroShotPredictor,
    load_predictor,
    parse_classes,
    resolve_model_dir,
)
from skyfuse.inference.predictor import Explanation, LabelProb, Prediction, Predictor
from skyfuse.inference.records import PredictionWriter, read_predictions

__all__ = [
    "CaptionLookup",
    "Explanation",
    "InputImage",
    "LabelProb",
    "PredictSummary",
    "Prediction",
    "PredictionWriter",
    "Predictor",
    "ZeroShotPredictor",
    "collect_inputs",
    "load_predictor",
    "parse_classes",
    "predict_files",
    "read_predictions",
    "resolve_model_dir",
]
