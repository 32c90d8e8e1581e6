"""End-to-end fine-tuning (the paper's mode, for GPUs): pixels and token ids through both encoders.

Same protocol as frozen-feature training (selection on val, test scored once, resume from
``checkpoints/``), with `skyfuse.models.e2e.EndToEndClassifier`, separate learning rates for the
encoders and the fusion network, aerial augmentation (flips, 90-degree rotations) on the device, and
Lightning's devices / strategy / num_nodes / precision passed through (e.g. ``bf16-mixed``, ``ddp``).
Images come from a uint8 pixel cache built (or reused) at the image encoder's input size, captions are
tokenised once, and `GpuAugment` normalises and augments each batch after it reaches the device
(`skyfuse.training.finetune_data`); ``pixel_cache=False`` keeps the decode-every-epoch path.
The bundle holds the fusion weights as usual plus the fine-tuned encoders' weights
(``image_encoder.safetensors``, ``text_encoder.safetensors``; ``extra.finetuned_encoders``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skyfuse.data.pixelcache import GpuAugment, gpu_augment_for
from skyfuse.encoders.base import ImagePreprocess
from skyfuse.models.e2e import EndToEndClassifier
from skyfuse.training.augment import aerial_augment
from skyfuse.training.config import TrainConfig
from skyfuse.training.distributed import finetune_strategy, rank_zero_result, steps_per_process
from skyfuse.training.finetune_data import build_cached_inputs, cached_loader
from skyfuse.training.loop import (
    EpochHook,
    Loop,
    LoopSettings,
    build_loop,
    quiet_lightning,
    schedule_record,
)
from skyfuse.training.module import FusionTask


class ImageCaptionDataset(Dataset[tuple[torch.Tensor, str, int]]):
    """Decoded, preprocessed images with their captions and labels (``pixel_cache=False`` path)."""

    def __init__(
        self,
        samples: Sequence[Any],
        captions: Mapping[str, str],
        class_names: Sequence[str],
        encoder: Any,
    ) -> None:
        self.samples = list(samples)
        self.captions = captions
        self.class_to_idx = {c: i for i, c in enumerate(class_names)}
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        from skyfuse.data.images import load_image

        s = self.samples[i]
        pixels = self.encoder.preprocess([load_image(s.path)])[0]
        return pixels, self.captions[s.rel], self.class_to_idx[s.class_name]


class _Collate:
    """Stacks pixels and tokenises the batch's captions with the text encoder's tokenizer."""

    def __init__(self, text_encoder: Any) -> None:
        self.text_encoder = text_encoder

    def __call__(self, items: list[tuple[torch.Tensor, str, int]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([it[0] for it in items])
        tokens = self.text_encoder.tokenize([it[1] for it in items])
        return {"pixels": pixels, **tokens, "label": torch.tensor([it[2] for it in items])}


def device_batch(batch: dict[str, torch.Tensor], augment: GpuAugment) -> dict[str, torch.Tensor]:
    """A pixel-cache batch on its device -> model inputs: uint8 pixels normalised (and, when `augment`
    is in training mode, flipped / rotated), ``labels`` renamed ``label``."""
    out = {k: v for k, v in batch.items() if k not in ("labels", "index")}
    out["pixels"] = augment(batch["pixels"])
    out["label"] = batch["labels"]
    return out


class FinetuneTask(FusionTask):
    """`FusionTask` over pixels + token ids, with encoder / fusion learning rates and augmentation.

    With `augment` (a `GpuAugment`), batches are uint8 pixel-cache batches, turned into model inputs
    on the device in `on_after_batch_transfer`; flips and rotations only while training.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        steps_per_epoch: int,
        augment: GpuAugment | None = None,
    ) -> None:
        super().__init__(model, cfg, steps_per_epoch=steps_per_epoch)
        self.augment = augment

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.augment is None:
            return batch
        return device_batch(batch, self.augment)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        text = {k: v for k, v in batch.items() if k not in ("pixels", "label")}
        pixels = batch["pixels"]
        if self.augment is None and self.training and self.cfg.augment:
            pixels = aerial_augment(pixels)
        return self.model(pixels, **text).logits

    def parameter_groups(self) -> list[dict[str, Any]]:
        return self.model.param_groups(  # type: ignore[operator,no-any-return]
            encoder_lr=self.cfg.encoder_lr,
            fusion_lr=self.cfg.lr,
            weight_decay=self.cfg.weight_decay,
        )


def _loader(
    ds: Dataset[Any], collate: _Collate, cfg: TrainConfig, shuffle: bool
) -> DataLoader[Any]:
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        collate_fn=collate,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def build_end_to_end_model(
    image_encoder: str,
    text_encoder: str,
    model: str,
    num_classes: int,
    fusion: Mapping[str, Any] | None,
) -> tuple[EndToEndClassifier, Any]:
    """Trainable encoders from the registry + a fusion model sized to them."""
    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.models import FusionConfig, create_model

    img = create_image_encoder(image_encoder, trainable=True)
    txt = create_text_encoder(text_encoder, trainable=True)
    fcfg = FusionConfig(
        model=model,
        image_dim=img.dim,
        text_dim=txt.dim,
        num_classes=num_classes,
        **dict(fusion or {}),
    )
    return EndToEndClassifier(img, txt, create_model(fcfg)), fcfg  # type: ignore[arg-type]


@torch.inference_mode()
def predict_e2e(
    model: nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    augment: GpuAugment | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over a loader, eval mode; `augment` (eval mode: normalise only) for
    pixel-cache batches."""
    model.eval().to(device)
    if augment is not None:
        augment.eval().to(device)
    logits, labels = [], []
    for batch in loader:
        if augment is not None:
            batch = device_batch({k: v.to(device) for k, v in batch.items()}, augment)
        text = {k: v.to(device) for k, v in batch.items() if k not in ("pixels", "label")}
        logits.append(model(batch["pixels"].to(device), **text).logits.float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(logits), torch.cat(labels)


def run_finetune(
    folder: Any,
    split: Any,
    captions: Mapping[str, str],
    *,
    model: str,
    cfg: TrainConfig,
    fusion: Mapping[str, Any] | None,
    out_dir: Path,
    image_encoder: str,
    text_encoder: str,
    prompt_id: str | None = None,
    caption_source: Mapping[str, Any] | None = None,
    on_epoch: EpochHook | None = None,
    pixel_cache: bool = True,
    cache_dir: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Fine-tune end to end on ``split.train`` (selection on ``split.val``), test once, write the run.

    `pixel_cache` (default) builds or reuses the split's uint8 pixel cache under `cache_dir` (default:
    the feature cache folder, ``pixels/`` inside it); images it cannot decode are left out of all parts
    and counted in ``result["skipped_images"]``. False decodes every image in every epoch.
    `out_dir` must be new, or hold an unfinished run with the same ``run.json`` fingerprint (which
    resumes); `force` starts afresh. Under DDP only rank 0 scores the test split and writes the run;
    every rank returns the same result.
    """

    from skyfuse.errors import ConfigError
    from skyfuse.training.prepare import check_coverage
    from skyfuse.training.runfolder import captions_digest, open_run, run_fingerprint

    quiet_lightning()
    t0 = time.perf_counter()
    classes = list(split.classes)
    check_coverage(captions, [*split.train, *split.val, *split.test], "captions")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    e2e, fcfg = build_end_to_end_model(image_encoder, text_encoder, model, len(classes), fusion)
    img_id = getattr(e2e.image_encoder, "encoder_id", image_encoder)
    txt_id = getattr(e2e.text_encoder, "encoder_id", text_encoder)
    fingerprint = run_fingerprint(
        kind="finetune",
        model=fcfg.model,
        split=split,
        encoders=[img_id, txt_id],
        train_config=cfg.model_dump(mode="json"),
        fusion=fcfg.to_dict(),
        captions=captions_digest(captions, [*split.train, *split.val, *split.test]),
        extra={"input_pipeline": "pixel-cache" if pixel_cache else "decode"},
    )
    if open_run(out_dir, fingerprint, force=force, split=split) == "done":
        raise ConfigError(
            f"{out_dir}: holds a finished run (metrics.json); pass --force to retrain or choose another --out"
        )
    index = folder.by_rel()
    collate = _Collate(e2e.text_encoder)
    augment: GpuAugment | None = None
    skipped = 0
    if pixel_cache:
        pre: ImagePreprocess = getattr(e2e.image_encoder, "preprocess_cfg")  # noqa: B009
        cache, tokens = build_cached_inputs(
            folder, split, captions, classes, pre, e2e.text_encoder, cache_dir
        )
        skipped = len(cache.skipped)
        augment = gpu_augment_for(pre, dihedral=cfg.augment)

    def loader(rels: Sequence[str], shuffle: bool) -> DataLoader[Any]:
        if pixel_cache:
            return cached_loader(cache, tokens, rels, cfg, shuffle=shuffle)
        ds = ImageCaptionDataset([index[r] for r in rels], captions, classes, e2e.image_encoder)
        return _loader(ds, collate, cfg, shuffle=shuffle)

    train_loader = loader(split.train, True)
    val_loader = loader(split.val, False) if split.val else None
    loop = build_loop(
        LoopSettings.from_train_config(cfg, strategy=finetune_strategy(cfg.strategy)),
        max_epochs=cfg.epochs,
        has_val=val_loader is not None,
        checkpoint_dir=out_dir / "checkpoints" / "finetune",
        run_dir=out_dir,
        hparams=cfg.model_dump(mode="json"),
        on_epoch=on_epoch,
    )
    trainer = loop.trainer
    # the schedule counts the steps of one process: under DDP each rank sees 1/world of the batches
    n_train = len(train_loader.dataset)  # type: ignore[arg-type]
    steps = steps_per_process(n_train, cfg.batch_size, trainer.world_size)
    task = FinetuneTask(e2e, cfg, steps_per_epoch=steps, augment=augment)
    # from_pretrained leaves HF models in eval mode and Lightning keeps submodule modes as found, so
    # without this the trainable encoders would fine-tune with dropout off (frozen ones stay in eval)
    task.train()
    loop.fit(task, train_dataloaders=train_loader, val_dataloaders=val_loader)
    loop.keep_best(e2e)
    device = next(e2e.parameters()).device
    schedule = schedule_record(trainer, steps)
    return rank_zero_result(
        lambda: _finish(
            e2e, fcfg, folder, split, classes, cfg, loader, device, augment, out_dir,
            loop=loop, schedule=schedule, t0=t0, prompt_id=prompt_id,
            caption_source=caption_source, ids=(img_id, txt_id), names=(image_encoder, text_encoder),
            pixel_cache=pixel_cache, skipped=skipped,
        )
    )  # fmt: skip


def _finish(
    e2e: EndToEndClassifier,
    fcfg: Any,
    folder: Any,
    split: Any,
    classes: list[str],
    cfg: TrainConfig,
    loader: Any,
    device: torch.device,
    augment: GpuAugment | None,
    out_dir: Path,
    *,
    loop: Loop,
    schedule: dict[str, Any],
    t0: float,
    prompt_id: str | None,
    caption_source: Mapping[str, Any] | None,
    ids: tuple[str, str],
    names: tuple[str, str],
    pixel_cache: bool,
    skipped: int,
) -> dict[str, Any]:
    """Rank 0 only: the one look at the test split, then the run folder."""
    from safetensors.torch import save_model

    from skyfuse.training.metrics import classification_metrics
    from skyfuse.training.run import write_run

    img_id, txt_id = ids
    image_encoder, text_encoder = names
    logits, labels = predict_e2e(e2e, loader(split.test, False), device, augment)
    test = classification_metrics(labels, logits.argmax(-1), classes)  # the only look at test
    result: dict[str, Any] = {
        "model": fcfg.model,
        "mode": "finetune",
        "dataset": str(folder.root),
        "protocol": getattr(split, "protocol", None),
        "seed": cfg.seed,
        "split": {
            "seed": split.seed,
            "fingerprint": split.fingerprint,
            "train": len(split.train),
            "val": len(split.val),
            "test": len(split.test),
        },
        "encoders": {
            "image": img_id,
            "text": txt_id,
            "prompt_id": prompt_id,
            "finetuned": True,
            "image_name": image_encoder,
            "text_name": text_encoder,
        },
        "caption_source": dict(caption_source) if caption_source is not None else None,
        "fusion_config": fcfg.to_dict(),
        # as run: fine-tuning selects on val and tests each image once (it augments pixels instead
        # of averaging views), whatever the frozen-path settings say
        "train_config": {**cfg.model_dump(mode="json"), "views": 1, "selection": "val"},
        "training": {
            "best_epoch": loop.best.best_epoch if loop.best is not None else -1,
            "epochs_run": len(loop.history.rows),
            "best_val": loop.best.best_score if loop.best is not None else None,
            "history": loop.history.rows,
            "schedule": schedule,
            "seconds": round(time.perf_counter() - t0, 3),
        },
        "test": test,
        "input_pipeline": "pixel-cache" if pixel_cache else "decode",
        "skipped_images": skipped,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    e2e.cpu()

    def encoder_weights(model_dir: Path) -> None:
        for name in ("image_encoder", "text_encoder"):
            module = getattr(e2e, name)
            assert isinstance(module, nn.Module)
            save_model(module, str(model_dir / f"{name}.safetensors"))

    write_run(
        out_dir,
        result,
        e2e.fusion,
        fcfg,
        classes,
        extra={"finetuned_encoders": True},
        add_files=encoder_weights,
    )
    return result


def load_finetuned_encoders(
    model_dir: Path, image_encoder: str, text_encoder: str
) -> tuple[Any, Any]:
    """The fine-tuned encoders saved in a bundle (``extra.finetuned_encoders``), in eval mode.

    They are built trainable (so their outputs bypass the feature cache, which holds stock encoders'
    tokens) and loaded strictly from ``image_encoder.safetensors`` / ``text_encoder.safetensors``.
    """
    from safetensors.torch import load_model

    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.errors import CheckpointError

    built: list[nn.Module] = []
    factories: tuple[tuple[str, Any, str], ...] = (
        ("image_encoder", create_image_encoder, image_encoder),
        ("text_encoder", create_text_encoder, text_encoder),
    )
    for name, factory, spec in factories:
        path = Path(model_dir) / f"{name}.safetensors"
        if not path.is_file():
            raise CheckpointError(
                f"{path}: fine-tuned encoder weights missing; the bundle is incomplete"
            )
        enc = factory(spec, trainable=True)
        assert isinstance(enc, nn.Module)
        try:
            load_model(enc, str(path), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: does not fit encoder {spec!r} ({str(exc).splitlines()[0][:160]})"
            ) from None
        enc.eval()
        built.append(enc)
    return built[0], built[1]
