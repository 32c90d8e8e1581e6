"""Inference: a trained bundle as a `Predictor`, batch prediction to files with resume."""

from __future__ import annotations

from skyfuse.inference.batch import (
    CaptionLookup,
    CaptionPlan,
    InputImage,
    PredictSummary,
    collect_inputs,
    plan_captions,
    predict_files,
)
from skyfuse.inference.captions import (
    CaptionError,
    CaptionPolicy,
    CaptionRefused,
    resolve_caption_policy,
)
from skyfuse.inference.job import (
    CaptionChoice,
    ExplainJob,
    PredictJob,
    prepare_explain,
    prepare_predict,
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
    "CaptionChoice",
    "CaptionError",
    "CaptionLookup",
    "CaptionPlan",
    "CaptionPolicy",
    "CaptionRefused",
    "ExplainJob",
    "Explanation",
    "InputImage",
    "LabelProb",
    "PredictJob",
    "PredictSummary",
    "Prediction",
    "PredictionWriter",
    "Predictor",
    "ZeroShotPredictor",
    "collect_inputs",
    "load_predictor",
    "parse_classes",
    "plan_captions",
    "predict_files",
    "prepare_explain",
    "prepare_predict",
    "read_predictions",
    "resolve_caption_policy",
    "resolve_model_dir",
]
