"""Pick the right predictor for a bundle: classification (`Predictor`) or zero-shot (any class names).

Why: `skyfuse predict` and `skyfuse serve` take any bundle a training run wrote; a zero-shot bundle
scores images against class names given at prediction time (`--classes`), a classification bundle
only against the classes it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.inference.predictor import (
    LabelProb,
    LazyCaptionFn,
    Prediction,
    Predictor,
    caption_chunks,
)


def resolve_model_dir(path: str | Path) -> Path:
    """The bundle folder for `path`: the path itself, or its ``model/`` when `path` is the run folder a
    `skyfuse train` / `skyfuse zeroshot` run wrote (as `skyfuse evaluate` accepts). Checks nothing else:
    loading the bundle names what is wrong."""
    path = Path(path).expanduser()
    if not (path / "bundle.json").is_file() and (path / "model" / "bundle.json").is_file():
        return path / "model"
    return path


def parse_classes(text: str | None) -> list[str] | None:
    """'a, b ,c' -> ['a', 'b', 'c']; None or blank -> None; repeats are refused."""
    if text is None or not text.strip():
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(set(names)) != len(names):
        raise BadInputError(f"--classes lists a name twice: {text!r}; give each class once")
    return names


class ZeroShotPredictor:
    """A zero-shot bundle behind the `Predictor` interface (no attention maps)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        classes: Sequence[str] | None = None,
        image_encoder: Any | None = None,
        text_encoder: Any | None = None,
        captioner: Any | None = None,
        captioner_options: dict[str, Any] | None = None,
        batch_size: int = 16,
    ) -> None:
        from skyfuse.zeroshot import load_zeroshot_model

        self.model_dir = Path(model_dir)
        self.model = load_zeroshot_model(
            self.model_dir, image_encoder=image_encoder, text_encoder=text_encoder
        )
        self.class_names: list[str] = list(classes or self.model.class_names)
        if len(self.class_names) < 2:
            raise BadInputError("zero-shot prediction needs at least two class names in --classes")
        self.batch_size = max(1, int(batch_size))
        self.prompt_id = self.model.prompt_id
        self._captions = LazyCaptionFn(captioner, captioner_options)

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        return self._captions(images, prompt=self.prompt_id)

    def predict(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str] | None = None,
        top_k: int = 5,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        out: list[Prediction] = []
        for chunk, caps in caption_chunks(images, captions, self.batch_size, self.caption):
            ranked = self.model.predict(chunk, caps, self.class_names, top_k)
            for cap, top in zip(caps, ranked, strict=True):
                out.append(Prediction([LabelProb(n, p) for n, p in top], cap))
        return out


def load_predictor(
    model_dir: str | Path, *, classes: Sequence[str] | None = None, **kw: Any
) -> Predictor | ZeroShotPredictor:
    """`ZeroShotPredictor` for a zero-shot bundle, `Predictor` otherwise (which refuses `classes`)."""
    from skyfuse.zeroshot import is_zeroshot_bundle

    if is_zeroshot_bundle(model_dir):
        kw.pop("device", None)
        return ZeroShotPredictor(model_dir, classes=classes, **kw)
    if classes:
        raise ConfigError(
            f"{model_dir}: a classification bundle scores only its own classes; --classes needs a"
            " zero-shot bundle (from `skyfuse zeroshot ... --out DIR`, in DIR/model)"
        )
    return Predictor(model_dir, **kw)
