"""The `transformers` backend: a local vision-language model (LLaVA, Qwen2-VL / Qwen2.5-VL,
SmolVLM/Idefics3, ...) through `AutoModelForImageTextToText` + `AutoProcessor`.

Why not the pipeline: batching with left padding, decoding only the new tokens and loading strictly
from local files are easier to control directly. Weights load from a local folder or the Hugging
Face cache; with ``HF_HUB_OFFLINE=1`` or a folder path nothing is downloaded, and missing weights are
a one-line error that says how to get them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

from skyfuse.captioning.base import CAPTIONERS, Captioner, CaptionFailure, ImageJob
from skyfuse.captioning.prompts import Prompt
from skyfuse.errors import BadInputError, CheckpointError, ConfigError, ImageDecodeError

DTYPES = ("float32", "bfloat16", "float16")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "TRUE", "yes")


def model_id_for(model: str) -> str:
    """Recorded model id: a hub id as given; a local folder as ``<name>@<config hash>`` so that the
    same weights resume wherever the folder lives and different weights never do."""
    path = Path(model).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        digest = hashlib.sha256(cfg.read_bytes()).hexdigest()[:10] if cfg.is_file() else "noconfig"
        return f"{path.resolve().name}@{digest}"
    return model


@CAPTIONERS.register("transformers")
class TransformersCaptioner(Captioner):
    """Batched greedy (or sampled) generation with a local image-text-to-text model."""

    backend: ClassVar[str] = "transformers"
    net: Any
    processor: Any

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 4,
        max_tokens: int = 128,
        temperature: float = 0.0,
        seed: int | None = 0,
        max_side: int | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if not model:
            raise ConfigError("the transformers backend needs --model (a local folder or a hub id)")
        import torch

        self.source = model
        path = Path(model).expanduser()
        if model.startswith((".", "/", "~")) and not path.is_dir():
            raise BadInputError(f"{model}: model folder not found; check the path")
        if path.is_dir() and not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path}: no config.json, so not a Hugging Face model folder; fill it with"
                " `hf download <id> --local-dir` or `save_pretrained`"
            )
        self.model = model_id_for(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        self.dtype = dtype
        self.batch_size = max(1, batch_size)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.max_side = max_side
        offline = (
            local_files_only if local_files_only is not None else (path.is_dir() or _offline())
        )
        self._load(str(path) if path.is_dir() else model, offline, trust_remote_code)

    def _load(self, where: str, offline: bool, trust_remote_code: bool) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        auto_model: Any = AutoModelForImageTextToText
        kw: dict[str, Any] = {"local_files_only": offline, "trust_remote_code": trust_remote_code}
        try:
            self.processor = AutoProcessor.from_pretrained(where, **kw)
            self.net = auto_model.from_pretrained(where, dtype=getattr(torch, self.dtype), **kw)
        except OSError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            how = (
                "it is not in the local Hugging Face cache; download it on a connected machine"
                f" (`hf download {where}`) or pass a local folder"
                if offline
                else "check the hub id or pass a local folder"
            )
            raise CheckpointError(f"{where}: cannot load the VLM ({first}); {how}") from None
        except (ValueError, KeyError) as exc:
            first = str(exc).splitlines()[0]
            raise CheckpointError(
                f"{where}: not an image-text-to-text model transformers can load ({first})"
            ) from None
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # batched generation continues from the right edge
        self.net.to(self.device).eval()

    def params(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dtype": self.dtype,
            "max_new_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_side": self.max_side,
        }

    def _generate(self, images: list[Any], prompt: Prompt) -> list[str]:
        import torch

        msgs = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.text}]}
        ]
        text = self.processor.apply_chat_template(msgs, add_generation_prompt=True)
        inputs = self.processor(
            images=images, text=[text] * len(images), return_tensors="pt", padding=True
        ).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, self.dtype))
        gen: dict[str, Any] = {"max_new_tokens": self.max_tokens, "do_sample": self.temperature > 0}
        if self.temperature > 0:
            gen["temperature"] = self.temperature
        if self.seed is not None:
            torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.net.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1] :]
        return [s.strip() for s in self.processor.batch_decode(new, skip_special_tokens=True)]

    def caption_batch(self, jobs: list[ImageJob], prompt: Prompt) -> list[str | CaptionFailure]:
        from skyfuse.data.images import decode_image

        results: list[str | CaptionFailure] = [CaptionFailure("not run")] * len(jobs)
        images, slots = [], []
        for i, job in enumerate(jobs):
            try:
                img = decode_image(job.data, job.path)
            except ImageDecodeError as exc:
                results[i] = CaptionFailure(exc.reason)
                continue
            if self.max_side is not None and max(img.size) > self.max_side:
                img.thumbnail((self.max_side, self.max_side))
            images.append(img)
            slots.append(i)
        if not images:
            return results
        try:
            for slot, text in zip(slots, self._generate(images, prompt), strict=True):
                results[slot] = text
        except RuntimeError as exc:  # e.g. out of memory: retry one image at a time
            if len(images) == 1:
                results[slots[0]] = CaptionFailure(_reason(exc))
                return results
            for slot, img in zip(slots, images, strict=True):
                try:
                    results[slot] = self._generate([img], prompt)[0]
                except RuntimeError as one:
                    results[slot] = CaptionFailure(_reason(one))
        return results

    def close(self) -> None:
        """Free the model (the captioner cannot be used afterwards)."""
        self.net = None
        self.processor = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def _reason(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"generation failed ({first[:200]}); try a smaller --batch-size or --max-side"
