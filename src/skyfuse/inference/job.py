"""Prediction and explanation jobs as data: what `skyfuse predict`, `explain` and `serve` decide about
captions and encoders, testable without the command line.

A job is prepared in two steps so that a caller can report the caption plan, and open its progress
display, only once the model has loaded and every check has passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skyfuse.inference.batch import CaptionPlan, InputImage, PredictSummary


def check_live_backend(name: str, vlm_model: str | None) -> None:
    """Refuse a captioner that cannot work before anything is loaded or written (captioners are only
    built when the first image needs a caption, which would be after the output file exists)."""
    from skyfuse.captioning import list_captioners
    from skyfuse.errors import ConfigError

    if name == "files":
        raise ConfigError(
            "--captioner files imports a caption file; pass it as --captions FILE instead"
        )
    if name not in list_captioners():
        raise ConfigError(
            f"--captioner {name}: unknown captioner; use one of attributes, openai, transformers"
        )
    if name in {"openai", "transformers"} and not vlm_model:
        what = "the model name the server knows" if name == "openai" else "a local folder or hub id"
        raise ConfigError(f"--captioner {name} needs --vlm-model ({what})")


def encoder_overrides(image_encoder: str | None, text_encoder: str | None) -> dict[str, Any]:
    """Encoders built from names/folders, as keyword arguments that replace a bundle's own."""
    from skyfuse.encoders import create_image_encoder, create_text_encoder

    kw: dict[str, Any] = {}
    if image_encoder:
        kw["image_encoder"] = create_image_encoder(image_encoder)
    if text_encoder:
        kw["text_encoder"] = create_text_encoder(text_encoder)
    return kw


@dataclass(frozen=True)
class CaptionChoice:
    """Where the captions of new images come from.

    `captions` is a file of given captions; images without one are captioned by `captioner` when
    forced, otherwise by the bundle's training caption source, which `vlm_model` / `base_url` locate.
    """

    captions: Path | None = None
    captioner: str | None = None
    vlm_model: str | None = None
    base_url: str | None = None
    prompt: str | None = None
    allow_mismatch: bool = False

    def load_given(self, dataset_root: Path | None = None) -> dict[str, str] | None:
        """The given captions, keyed as in `dataset_root` when that is a scene folder."""
        if self.captions is None:
            return None
        from skyfuse.captioning import load_captions
        from skyfuse.errors import BadInputError

        try:
            return load_captions(self.captions, dataset_root)
        except BadInputError:
            if dataset_root is None:
                raise
            # not a scene folder (e.g. a plain folder of images): keep the source's own names,
            # inputs find their captions by name matching
            return load_captions(self.captions)

    def captioner_settings(self) -> tuple[str | None, dict[str, Any]]:
        """(the forced captioner or None, its options), checked before anything loads."""
        from skyfuse.captioning.job import backend_options

        if self.captioner is not None:
            check_live_backend(self.captioner, self.vlm_model)
            opts = backend_options(self.captioner, model=self.vlm_model, base_url=self.base_url)
            return self.captioner, opts
        return None, {
            k: v for k, v in (("model", self.vlm_model), ("base_url", self.base_url)) if v
        }

    def predictor_kw(self) -> dict[str, Any]:
        """Keyword arguments of `Predictor` / `load_predictor` for this choice."""
        name, opts = self.captioner_settings()
        return {
            "captioner": name,
            "captioner_options": opts,
            "prompt": self.prompt,
            "allow_caption_mismatch": self.allow_mismatch,
        }


@dataclass(frozen=True)
class PredictJob:
    """`predict_files` over image files and folders, into a resumable JSONL/CSV file."""

    model_dir: Path
    inputs: Sequence[Path]
    out: Path
    caption: CaptionChoice = field(default_factory=CaptionChoice)
    top_k: int = 5
    batch_size: int = 16
    classes: str | None = None
    device: str = "cpu"
    views: int | None = None
    image_encoder: str | None = None
    text_encoder: str | None = None

    @property
    def dataset_root(self) -> Path | None:
        """The one folder given, whose relative paths key the given captions."""
        one = len(self.inputs) == 1 and self.inputs[0].is_dir()
        return self.inputs[0] if one else None


@dataclass
class PreparedPredict:
    """A loaded predictor with its inputs and caption plan, ready to `run`."""

    job: PredictJob
    predictor: Any
    items: list[InputImage]
    captions: dict[str, str] | None
    plan: CaptionPlan

    def run(
        self,
        *,
        on_start: Callable[[int, int], None] | None = None,
        on_progress: Callable[[int, PredictSummary], None] | None = None,
    ) -> PredictSummary:
        """Predict what the output file lacks; `on_start(total, already_done)` once it is open."""
        from skyfuse.inference.batch import predict_files
        from skyfuse.inference.records import PredictionWriter

        job = self.job
        with PredictionWriter(job.out, top_k=job.top_k) as writer:
            if on_start is not None:
                on_start(len(self.items), sum(1 for it in self.items if it.key in writer.done))
            return predict_files(
                self.predictor,
                self.items,
                writer,
                captions=self.captions,
                top_k=job.top_k,
                batch_size=job.batch_size,
                given_mismatch=self.plan.given_mismatch,
                on_progress=on_progress,
            )


def prepare_predict(job: PredictJob) -> PreparedPredict:
    """Check the inputs and captions, load the model and plan captions; nothing is written yet."""
    from skyfuse.inference.batch import collect_inputs, plan_captions
    from skyfuse.inference.loading import load_predictor, parse_classes, resolve_model_dir

    model_dir = resolve_model_dir(job.model_dir)
    names = parse_classes(job.classes)
    items = collect_inputs(job.inputs)
    caps = job.caption.load_given(job.dataset_root)
    predictor = load_predictor(
        model_dir,
        classes=names,
        **job.caption.predictor_kw(),
        batch_size=job.batch_size,
        device=job.device,
        views=job.views,
        **encoder_overrides(job.image_encoder, job.text_encoder),
    )
    allow = job.caption.allow_mismatch
    plan = plan_captions(predictor, items, caps, job.caption.captions, allow_mismatch=allow)
    return PreparedPredict(job, predictor, items, caps, plan)


@dataclass(frozen=True)
class ExplainJob:
    """Attention figures, a t-SNE map and (for a labelled folder) a confusion matrix for `path`."""

    model_dir: Path
    path: Path
    out: Path
    caption: CaptionChoice = field(default_factory=CaptionChoice)
    limit: int = 300
    examples: int = 6
    seed: int = 0
    batch_size: int = 16
    device: str = "cpu"
    image_encoder: str | None = None
    text_encoder: str | None = None


@dataclass
class PreparedExplain:
    """A loaded predictor and the given captions, ready to `run`."""

    job: ExplainJob
    predictor: Any
    captions: dict[str, str] | None

    @property
    def model_kind(self) -> str:
        return str(getattr(getattr(self.predictor.bundle, "config", None), "model", "this"))

    def run(self, on_progress: Callable[[int], None] | None = None) -> Any:
        """Write the figures; returns the `ExplainSummary`."""
        from skyfuse.inference.explain import explain_path

        job = self.job
        return explain_path(
            self.predictor,
            job.path,
            job.out,
            captions=self.captions,
            limit=job.limit,
            examples=job.examples,
            seed=job.seed,
            batch_size=job.batch_size,
            on_progress=on_progress,
        )

    def lacks_attention(self, summary: Any) -> bool:
        """True when figures were asked for but the model has no cross-attention to draw."""
        drawn = any(f.parent.name == "attention" for f in summary.files)
        return self.job.examples > 0 and not drawn


def prepare_explain(job: ExplainJob) -> PreparedExplain:
    """Load the model and the given captions; nothing is written yet."""
    from skyfuse.inference.loading import resolve_model_dir
    from skyfuse.inference.predictor import Predictor

    model_dir = resolve_model_dir(job.model_dir)
    caps = job.caption.load_given(job.path if job.path.is_dir() else None)
    predictor = Predictor(
        model_dir,
        **job.caption.predictor_kw(),
        batch_size=job.batch_size,
        device=job.device,
        **encoder_overrides(job.image_encoder, job.text_encoder),
    )
    return PreparedExplain(job, predictor, caps)


__all__ = [
    "CaptionChoice",
    "ExplainJob",
    "PredictJob",
    "PreparedExplain",
    "PreparedPredict",
    "check_live_backend",
    "encoder_overrides",
    "prepare_explain",
    "prepare_predict",
]
