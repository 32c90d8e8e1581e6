"""Pick the right predictor for a bundle: classification (`Predictor`) or zero-shot (any class names).

Why: `skyfuse predict` and `skyfuse serve` take any bundle a training run wrote; a zero-shot bundle
scores images against class names given at prediction time (`--classes`), a classification bundle
only against the classes it was trained on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.inference.predictor import (
    CaptionProvider,
    LabelProb,
    Prediction,
    Predictor,
    caption_chunks,
    caption_policy_for,
    failed_prediction,
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
        prompt: Any | None = None,
        allow_caption_mismatch: bool = False,
        batch_size: int = 16,
    ) -> None:
        from skyfuse.training.bundle import read_manifest
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
        # image-only needs a text mask the zero-shot head does not take: never offered here
        self.caption_policy = caption_policy_for(
            read_manifest(self.model_dir).get("caption_source"),
            None,
            None,
            self.model_dir,
            captioner=captioner,
            captioner_options=captioner_options,
            prompt=prompt,
            allow_caption_mismatch=allow_caption_mismatch,
        )
        self._captions = CaptionProvider(self.caption_policy)

    def warm_up(self) -> float:
        """As `Predictor.warm_up`: one prediction and the captioner built; returns seconds."""
        t0 = time.perf_counter()
        self.model.predict(
            [Image.new("RGB", (64, 64), (96, 112, 80))], ["a warm-up caption"], self.class_names, 1
        )
        self._captions.warm_up()
        return round(time.perf_counter() - t0, 3)

    def predict(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str | None] | None = None,
        top_k: int = 5,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        """As `Predictor.predict` (no attention maps)."""
        out: list[Prediction] = []
        for chunk, caps in caption_chunks(images, captions, self.batch_size):
            slots = self._captions.slots(chunk, caps)
            ok = [i for i, slot in enumerate(slots) if slot.error is None]
            ranked = (
                self.model.predict(
                    [chunk[i] for i in ok],
                    [slots[i].text or "" for i in ok],
                    self.class_names,
                    top_k,
                )
                if ok
                else []
            )
            done = dict(zip(ok, ranked, strict=True))
            for i, slot in enumerate(slots):
                top = done.get(i)
                out.append(
                    failed_prediction(slot)
                    if top is None
                    else Prediction(
                        [LabelProb(n, p) for n, p in top],
                        slot.text,
                        caption_source=slot.source,
                        caption_mismatch=slot.mismatch,
                    )
                )
        return out


def load_predictor(
    model_dir: str | Path, *, classes: Sequence[str] | None = None, **kw: Any
) -> Predictor | ZeroShotPredictor:
    """`ZeroShotPredictor` for a zero-shot bundle, `Predictor` otherwise (which refuses `classes`)."""
    from skyfuse.zeroshot import is_zeroshot_bundle

    if is_zeroshot_bundle(model_dir):
        kw.pop("device", None)
        kw.pop("views", None)  # zero-shot bundles score pooled vectors of one view
        return ZeroShotPredictor(model_dir, classes=classes, **kw)
    if classes:
        raise ConfigError(
            f"{model_dir}: a classification bundle scores only its own classes; --classes needs a"
            " zero-shot bundle (from `skyfuse zeroshot ... --out DIR`, in DIR/model)"
        )
    return Predictor(model_dir, **kw)
