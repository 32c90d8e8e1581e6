"""End-to-end fine-tuning speed of the paper's configuration (ViT-B/16 + CLIP text + dual fusion, 224 px).

One run measures, on one GPU, with both encoders randomly initialised from their configs (``ViTConfig()``
and ``CLIPTextConfig()`` defaults: the compute of the real checkpoints, no download):

- training images/s (forward, backward, gradient clipping at 0.8, optimizer step) and inference
  images/s for these variants:
    paper-fp32       the published model's re-creation (PaperFusion + HF ViT + CLIP text, eager
                     attention), fp32, Adam, batch 64, fp32 pixels copied from pageable memory each step
    ours-fp32        skyfuse's EndToEndClassifier (dual fusion), SDPA attention, fused AdamW, uint8
                     pixels from pinned memory, augmented and normalised on the GPU, fp32
    ours-bf16        the same under bf16 autocast
    ours-bf16-b256   the same at batch 256
    ours-compiled    the same with torch.compile (loss, fusion, encoders and GPU augmentation in one graph)
- peak GPU memory per variant;
- model FLOPs per image counted with ``torch.utils.flop_counter.FlopCounterMode`` on one step, and
  model FLOPs utilisation (MFU) against the card's bf16 matmul rate measured in the same run;
- a torch.profiler summary of the fastest variant (top kernels, time by category, GPU idle share), so
  the one GPU run also says what is in the way.

The full numbers go to ``--out`` (JSON); a short table is printed last. Targets (issue 7): >= 8x the
paper-fp32 training rate and >= 35 % MFU. On a CPU, ``--smoke`` runs the same code at tiny sizes.

    python3 bench/gpu.py --out gpu.json                 # on a CUDA machine, < 5 minutes on an H100
    .venv/bin/python bench/gpu.py --smoke --out s.json  # on a CPU, seconds (the test runs this)
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import gc
import json
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without installing (GPU machines)
    sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from skyfuse.data.pixelcache import GpuAugment  # noqa: E402
from skyfuse.models.e2e import (  # noqa: E402
    build_end_to_end,
    text_model_from_config,
    to_channels_last,
)
from skyfuse.models.reference import PaperFusion  # noqa: E402

NUM_CLASSES = 30
LOADER_S = 30.0  # budget the loader measurement needs
INFER_COMPILE_S = 60.0  # budget needed to also compile the inference graph (H100 machine, 16 cores)
ISSUE_TARGETS = {"speedup_vs_paper_fp32": 8.0, "mfu": 0.35}


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    model: str  # "paper" | "ours"
    batch: int
    precision: str  # "fp32" | "bf16"
    attention: str  # HF encoders' attn_implementation
    optimizer: str  # "adam" | "adamw-fused"
    input: str  # "fp32-pageable" | "uint8-pinned"
    compile_mode: str | None = None
    channels_last: bool = False
    note: str = ""


def default_variants(big_batch: int, compile_mode: str) -> list[Variant]:
    paper = Variant(
        "paper-fp32",
        "paper",
        64,
        "fp32",
        "eager",
        "adam",
        "fp32-pageable",
        note="published mode: fp32 eager, Adam, float pixels copied per step",
    )
    ours = Variant(
        "ours-fp32",
        "ours",
        64,
        "fp32",
        "sdpa",
        "adamw-fused",
        "uint8-pinned",
        channels_last=True,
        note="EndToEndClassifier, SDPA, fused AdamW, GPU augment",
    )
    return [
        paper,
        ours,
        replace(ours, name="ours-bf16", precision="bf16", note="+ bf16 autocast"),
        replace(ours, name=f"ours-bf16-b{big_batch}", precision="bf16", batch=big_batch,
                note=f"+ batch {big_batch}"),
        replace(ours, name="ours-compiled", precision="bf16", batch=big_batch,
                compile_mode=compile_mode, note=f"+ torch.compile({compile_mode})"),
    ]  # fmt: skip


def extra_variants(big_batch: int) -> list[Variant]:
    """Candidates beyond the default set (--extra): each costs minutes of compilation."""
    base = Variant(
        "ours-compiled-autotune",
        "ours",
        big_batch,
        "bf16",
        "sdpa",
        "adamw-fused",
        "uint8-pinned",
        "max-autotune-no-cudagraphs",
        True,
        note="+ Triton GEMM templates with fused epilogues (autotuned)",
    )
    return [
        base,
        replace(base, name="ours-compiled-cudagraphs", compile_mode="reduce-overhead",
                note="+ CUDA graphs (launch overhead)"),
    ]  # fmt: skip


@dataclass
class Sizes:
    """Model and data sizes: the paper's for a real run, tiny ones for --smoke."""

    vision: dict[str, Any]
    text: dict[str, Any]
    fusion: dict[str, Any]
    text_len: int
    vocab: int
    image_size: int


def paper_sizes() -> Sizes:
    # ViTConfig() = ViT-B/16 at 224 px; CLIPTextConfig() = the text tower of clip-vit-base-patch32.
    return Sizes(
        vision={},
        text={},
        fusion={"width": 512, "heads": 4, "levels": 2, "mlp_ratio": 2.0, "dropout": 0.1},
        text_len=77,
        vocab=49408,
        image_size=224,
    )


def smoke_sizes() -> Sizes:
    return Sizes(
        vision={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        text={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "vocab_size": 1000, "max_position_embeddings": 16,
              "bos_token_id": 998, "eos_token_id": 999, "pad_token_id": 1},
        fusion={"width": 32, "heads": 4, "levels": 2, "mlp_ratio": 2.0, "dropout": 0.1},
        text_len=16,
        vocab=1000,
        image_size=32,
    )  # fmt: skip


def hf_configs(sizes: Sizes) -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, ViTConfig

    return ViTConfig(**sizes.vision), CLIPTextConfig(**sizes.text)


# -- models ------------------------------------------------------------------------------------------
class PaperEndToEnd(nn.Module):
    """The published model's compute: HF ViT (with its pooler) + CLIP text, all tokens, PaperFusion."""

    def __init__(self, vision_config: Any, text_config: Any, attention: str) -> None:
        super().__init__()
        from transformers import ViTModel

        self.vit = ViTModel(vision_config)  # the published code kept the (unused) pooler
        self.vit.set_attn_implementation(attention)
        self.text = text_model_from_config(text_config, attention)
        self.fusion = PaperFusion(
            NUM_CLASSES,
            image_dim=vision_config.hidden_size,
            text_dim=text_config.hidden_size,
        )

    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        img = self.vit(pixel_values=pixels).last_hidden_state
        txt = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.fusion(img, txt)


def build_model(v: Variant, sizes: Sizes, device: torch.device) -> nn.Module:
    vc, tc = hf_configs(sizes)
    model: nn.Module
    if v.model == "paper":
        model = PaperEndToEnd(vc, tc, v.attention)
    else:
        model = build_end_to_end(
            vc, tc, num_classes=NUM_CLASSES, model="dual", attn_implementation=v.attention,
            **sizes.fusion,
        )  # fmt: skip
    model = model.to(device)
    if v.channels_last:
        to_channels_last(model)
    return model.train()


def build_optimizer(v: Variant, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if v.optimizer == "adam":
        return torch.optim.Adam(params, lr=1e-4)
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, fused=fused)


# -- inputs ------------------------------------------------------------------------------------------
@dataclass
class InputPool:
    """A few host batches rotated through, so each step pays the host-to-device copy it would pay."""

    pixels: list[Tensor]
    input_ids: list[Tensor]
    attention_mask: list[Tensor]
    labels: list[Tensor]

    def get(self, i: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        k = i % len(self.pixels)
        nb = self.pixels[k].is_pinned()
        return (
            self.pixels[k].to(device, non_blocking=nb),
            self.input_ids[k].to(device, non_blocking=nb),
            self.attention_mask[k].to(device, non_blocking=nb),
            self.labels[k].to(device, non_blocking=nb),
        )


def make_pool(
    v: Variant, sizes: Sizes, device: torch.device, n: int = 3, seed: int = 0
) -> InputPool:
    g = torch.Generator().manual_seed(seed)
    b, s, L = v.batch, sizes.image_size, sizes.text_len
    pin = device.type == "cuda" and v.input == "uint8-pinned"
    pool = InputPool([], [], [], [])
    for _ in range(n):
        raw = torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8, generator=g)
        if v.input == "fp32-pageable":  # the published loader: normalised float tensors, NCHW
            pixels = ((raw.permute(0, 3, 1, 2).float() / 255.0) - 0.5) / 0.5
            pixels = pixels.contiguous()
        else:
            pixels = raw
        # captions: BOS, words, EOS, padding; lengths spread like real captions (median ~45 tokens)
        lengths = torch.randint(max(3, L // 4), L + 1, (b,), generator=g)
        ids = torch.randint(0, sizes.vocab - 3, (b, L), generator=g)
        pos = torch.arange(L)[None, :]
        ids[:, 0] = sizes.vocab - 2
        ids = torch.where(pos == (lengths - 1)[:, None], sizes.vocab - 1, ids)
        mask = (pos < lengths[:, None]).long()
        ids = ids * mask  # pad id 0
        labels = torch.randint(0, NUM_CLASSES, (b,), generator=g)
        tensors = [pixels, ids, mask, labels]
        if pin:
            tensors = [t.pin_memory() for t in tensors]
        pool.pixels.append(tensors[0])
        pool.input_ids.append(tensors[1])
        pool.attention_mask.append(tensors[2])
        pool.labels.append(tensors[3])
    return pool


# -- steps -------------------------------------------------------------------------------------------
def autocast_ctx(v: Variant, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if v.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_loss_fn(v: Variant, model: nn.Module, augment: GpuAugment | None, device: torch.device
                 ) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:  # fmt: skip
    """pixels, ids, mask, labels -> loss; for ours it includes the GPU augmentation (so a compiled
    graph fuses the uint8 -> float conversion and normalisation into the first kernels)."""

    def loss_fn(pixels: Tensor, ids: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
        if augment is not None:
            pixels = augment(pixels)
        with autocast_ctx(v, device):
            out = model(pixels, ids, mask)
            logits = out if isinstance(out, Tensor) else out.logits
        return F.cross_entropy(logits.float(), labels)

    return loss_fn


def make_logits_fn(v: Variant, model: nn.Module, augment: GpuAugment | None, device: torch.device
                   ) -> Callable[[Tensor, Tensor, Tensor], Tensor]:  # fmt: skip
    def logits_fn(pixels: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        if augment is not None:
            pixels = augment(pixels)
        with autocast_ctx(v, device):
            out = model(pixels, ids, mask)
        return out if isinstance(out, Tensor) else out.logits

    return logits_fn


class Timer:
    """Wall time of a region, synchronising the device at both ends (device work is asynchronous)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def region(self) -> Iterator[list[float]]:
        out: list[float] = []
        self.sync()
        t = time.perf_counter()
        yield out
        self.sync()
        out.append(time.perf_counter() - t)


def step_times(run_step: Callable[[int], Any], steps: int, device: torch.device) -> list[float]:
    """Per-step seconds: CUDA events on a GPU (no host sync between steps), wall clock on a CPU."""
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(steps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(steps)]
        for i in range(steps):
            starts[i].record()
            run_step(i)
            ends[i].record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)]
    out = []
    for i in range(steps):
        t = time.perf_counter()
        run_step(i)
        out.append(time.perf_counter() - t)
    return out


# -- measurement helpers ------------------------------------------------------------------------------
def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    """FLOP/s of an n x n x n matrix product on random data (the card's practical ceiling)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(3):
        a @ b
    rates = []
    timer = Timer(device)
    for _ in range(3):
        with timer.region() as t:
            for _ in range(iters):
                a @ b
        rates.append(2 * n**3 * iters / t[0])
    del a, b
    return statistics.median(rates)


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- profiler summary ---------------------------------------------------------------------------------
CATEGORIES: list[tuple[str, str]] = [
    ("memcpy/memset", r"memcpy|memset"),
    ("attention", r"flash|fmha|attention|sdpa|mem_eff"),
    ("optimizer", r"adam|multi_tensor|foreach|fused_sgd"),
    ("gemm", r"gemm|xmma|cutlass|nvjet|cublas|wgmma|matmul|aten::(mm|addmm|bmm|linear|baddbmm)\b|triton_tem"),
    ("conv", r"conv|implicit_convolve"),
    ("layer norm", r"layer_?norm"),
    ("softmax", r"softmax"),
    ("compiled fused (triton)", r"^triton_|triton"),
    ("copy/cast/transpose", r"copy|cast|transpose|permute|contiguous|catarray"),
    ("reduction", r"reduce|sum|norm|mean"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise|aten::(add|mul|div|gelu|relu|where|sub)"),
]  # fmt: skip


def categorise(name: str) -> str:
    low = name.lower()
    for cat, pattern in CATEGORIES:
        if re.search(pattern, low):
            return cat
    return "other"


def summarize_profile(prof: Any, device: torch.device, steps: int, wall_s: float, top: int = 25
                      ) -> dict[str, Any]:  # fmt: skip
    """Top kernels (device time on a GPU, self CPU time of ops on a CPU) and time by category."""
    rows: list[tuple[str, int, float]] = []
    for e in prof.key_averages():
        if getattr(e, "is_user_annotation", False):
            continue  # record_function ranges (e.g. compiled graphs) span kernels: no double count
        if device.type == "cuda":
            if "cuda" not in str(getattr(e, "device_type", "")).lower():
                continue  # CPU-side ops: their kernels are listed on their own
            us = float(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
                       or getattr(e, "device_time_total", 0))  # fmt: skip
        else:
            us = float(getattr(e, "self_cpu_time_total", 0))
        if us > 0:
            rows.append((str(e.key), int(e.count), us))
    rows.sort(key=lambda r: -r[2])
    busy_us = sum(r[2] for r in rows)
    cats: dict[str, float] = {}
    for name, _, us in rows:
        cats[categorise(name)] = cats.get(categorise(name), 0.0) + us
    per_step = 1e3 * steps
    wall_ms = wall_s * 1e3 / steps
    return {
        "steps": steps,
        "wall_ms_per_step": wall_ms,
        "busy_ms_per_step": busy_us / per_step,
        "busy_fraction": (busy_us / per_step) / wall_ms if wall_ms else None,
        "time_basis": "device kernels" if device.type == "cuda" else "self CPU time of ops",
        "categories": {
            k: {"ms_per_step": v / per_step, "share": v / busy_us if busy_us else 0.0}
            for k, v in sorted(cats.items(), key=lambda kv: -kv[1])
        },
        "top": [
            {
                "name": n[:160],
                "calls_per_step": c / steps,
                "ms_per_step": us / per_step,
                "share": us / busy_us if busy_us else 0.0,
                "category": categorise(n),
            }
            for n, c, us in rows[:top]
        ],
    }


# -- one variant --------------------------------------------------------------------------------------
@dataclass
class Settings:
    device: torch.device
    sizes: Sizes
    warmup: int
    steps: int
    infer_steps: int
    smoke: bool
    smoke_compile: bool
    profile_steps: int
    trace: Path | None
    deadline: float


@dataclass
class Result:
    variant: Variant
    train: dict[str, Any] | None = None
    infer: dict[str, Any] | None = None
    flops: dict[str, int] = field(default_factory=dict)
    attention: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    error: str | None = None
    skipped: str | None = None


def run_variant(v: Variant, s: Settings, profile: bool) -> Result:
    res = Result(v)
    device = s.device
    compile_mode = v.compile_mode
    if compile_mode and s.smoke and not s.smoke_compile:
        compile_mode = None
        res.skipped = "torch.compile skipped in --smoke (pass --smoke-compile to try it)"
    free_memory(device)
    reset_peak(device)
    model = build_model(v, s.sizes, device)
    from skyfuse.models.e2e import attention_implementations

    res.attention = attention_implementations(model)
    opt = build_optimizer(v, model, device)
    augment = None
    if v.input == "uint8-pinned":
        augment = GpuAugment((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), channels_last=v.channels_last)
        augment = augment.to(device).train()
    pool = make_pool(v, s.sizes, device)
    loss_fn = make_loss_fn(v, model, augment, device)
    params = [p for p in model.parameters() if p.requires_grad]

    # FLOPs of one training step (forward + backward) and one inference forward, eager, this batch
    batch0 = pool.get(0, device)
    res.flops["train_per_image"] = count_flops(lambda: loss_fn(*batch0).backward()) // v.batch
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.eval()
        res.flops["infer_per_image"] = (
            count_flops(lambda: make_logits_fn(v, model, augment, device)(*batch0[:3])) // v.batch
        )
        model.train()

    train_fn = loss_fn
    if compile_mode:
        train_fn = torch.compile(loss_fn, mode=compile_mode)

    def train_step(i: int) -> None:
        loss = train_fn(*pool.get(i, device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.8, foreach=device.type == "cuda")
        opt.step()
        opt.zero_grad(set_to_none=True)

    timer = Timer(device)
    with timer.region() as warm:
        for i in range(s.warmup):
            train_step(i)
    with timer.region() as total:
        times = step_times(train_step, s.steps, device)
    ips = v.batch * s.steps / total[0]
    res.train = {
        "images_per_s": ips,
        "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_min": 1e3 * min(times),
        "step_ms_max": 1e3 * max(times),
        "steps": s.steps,
        "warmup_s": warm[0],
        "peak_memory_gib": peak_memory_gib(device),
        "model_tflops_per_s": res.flops["train_per_image"] * ips / 1e12,
    }

    if profile and time.monotonic() < s.deadline:
        res.profile = profile_steps(train_step, s, base=s.warmup + s.steps)

    # inference: eval mode, no autograd, same batch
    opt.state.clear()  # free the optimizer's moments before measuring inference memory
    model.zero_grad(set_to_none=True)
    free_memory(device)
    reset_peak(device)
    model.eval()
    logits_fn = make_logits_fn(v, model, augment, device)
    infer_compiled = bool(compile_mode) and s.deadline - time.monotonic() > INFER_COMPILE_S
    if compile_mode and not infer_compiled:
        res.skipped = "inference ran eager: too little time budget left to compile it"
    if infer_compiled:
        logits_fn = torch.compile(logits_fn, mode=compile_mode)

    def infer_step(i: int) -> None:
        with torch.no_grad():
            logits_fn(*pool.get(i, device)[:3])

    with timer.region() as warm:
        for i in range(s.warmup):
            infer_step(i)
    with timer.region() as total:
        times = step_times(infer_step, s.infer_steps, device)
    ips = v.batch * s.infer_steps / total[0]
    res.infer = {
        "images_per_s": ips,
        "step_ms_median": 1e3 * statistics.median(times),
        "steps": s.infer_steps,
        "compiled": infer_compiled,
        "warmup_s": warm[0],
        "peak_memory_gib": peak_memory_gib(device),
        "model_tflops_per_s": res.flops["infer_per_image"] * ips / 1e12,
    }
    if compile_mode:
        torch._dynamo.reset()
    free_memory(device)
    return res


def profile_steps(train_step: Callable[[int], None], s: Settings, base: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if s.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    timer = Timer(s.device)
    with profile(activities=activities) as prof, timer.region() as wall:
        for i in range(s.profile_steps):
            train_step(base + i)
    summary = summarize_profile(prof, s.device, s.profile_steps, wall[0])
    if s.trace is not None:
        prof.export_chrome_trace(str(s.trace))
        summary["trace"] = str(s.trace)
    return summary


# -- the input pipeline on this machine ---------------------------------------------------------------
def measure_loader(n: int, size: int, log: Callable[[str], None]) -> dict[str, Any]:
    """bench/loader.py on this machine's CPUs: JPEG decode vs pixel cache, several workers.

    The JPEGs are procedural 600 px scenes (no real data travels to a GPU machine), 22 drawn and
    copied to `n` files: decode cost depends on content, so real photos may decode a bit slower."""
    import importlib.util
    import shutil

    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.synthetic import make_synthetic_dataset
    from skyfuse.encoders.base import ImagePreprocess

    spec = importlib.util.spec_from_file_location(
        "skyfuse_bench_loader", REPO / "bench" / "loader.py"
    )
    assert spec is not None and spec.loader is not None
    bench_loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_loader)
    cpus = os.cpu_count() or 1
    workers = sorted({min(4, cpus), cpus})
    with tempfile.TemporaryDirectory() as tmp:
        src = make_synthetic_dataset(Path(tmp) / "src", per_class=2, size=600)
        files = sorted(src.rglob("*.jpg"))
        for k in range(n):
            f = files[k % len(files)]
            dest = Path(tmp) / "jpeg" / f.parent.name / f"{k:05d}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        samples = SceneFolder(Path(tmp) / "jpeg").samples
        pre = ImagePreprocess(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "exact")
        result: dict[str, Any] = bench_loader.run(
            samples, preprocess=pre, workers=workers, batch=64, batches=4,
            cache_dir=Path(tmp) / "cache", build_workers=cpus,
        )  # fmt: skip
    result["source"] = "synthetic 600 px JPEG scenes (skyfuse.data.synthetic), copied to n files"
    log(f"[loader] {json.dumps(result['loader'])}")
    return result


# -- the run ------------------------------------------------------------------------------------------
def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device_type": device.type}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            device=p.name,
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
            memory_gib=p.total_memory / 2**30,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info["device"] = (
            f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} logical cores"
        )
    return info


def estimate_s(v: Variant, smoke: bool) -> float:
    """Rough wall time a variant needs on an H100 (compile dominates); used to respect the budget."""
    if smoke:
        return 1.0
    if v.compile_mode and "autotune" in v.compile_mode:
        return 240.0
    return 150.0 if v.compile_mode else 25.0


def run_all(variants: Sequence[Variant], s: Settings, profile_target: str | None,
            log: Callable[[str], None]) -> list[Result]:  # fmt: skip
    results: dict[str, Result] = {}
    # the baseline first, then the fastest candidates, so a tight budget drops the least useful
    order = sorted(variants, key=lambda v: (v.model != "paper", v.compile_mode is None, -v.batch))
    for v in order:
        left = s.deadline - time.monotonic()
        if left < estimate_s(v, s.smoke):
            results[v.name] = Result(v, skipped=f"time budget: {left:.0f} s left")
            log(f"[skip] {v.name}: {left:.0f} s of budget left")
            continue
        t = time.monotonic()
        try:
            r = run_variant(v, s, profile=(v.name == profile_target))
        except Exception as exc:  # a failed variant must not lose the others' numbers
            r = Result(v, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
            r.flops = {}
            log(traceback.format_exc(limit=8))
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
            free_memory(s.device)
        log(
            f"[done] {v.name} in {time.monotonic() - t:.1f} s: "
            + (f"train {r.train['images_per_s']:,.1f} img/s" if r.train else r.error or "no result")
        )
        results[v.name] = r
    return [results[v.name] for v in variants]


def finish(results: list[Result], peak: dict[str, Any]) -> dict[str, Any]:
    """Ratios to the baseline, MFU and the targets' verdicts."""
    base = next((r for r in results if r.variant.name == "paper-fp32" and r.train), None)
    bf16_rate = peak.get("bf16_matmul_flops_per_s")
    out = []
    for r in results:
        d: dict[str, Any] = {"name": r.variant.name, **asdict(r.variant)}
        d.update(train=r.train, infer=r.infer, flops=r.flops, attention=r.attention, error=r.error,
                 skipped=r.skipped)  # fmt: skip
        for phase in ("train", "infer"):
            m = getattr(r, phase)
            if m and bf16_rate:
                m["mfu_vs_bf16_matmul"] = m["model_tflops_per_s"] * 1e12 / bf16_rate
            if m and base and base.train and base.infer:
                m["speedup_vs_paper_fp32"] = (
                    m["images_per_s"] / getattr(base, phase)["images_per_s"]
                )
        out.append(d)
    timed = [r for r in results if r.train]
    best = max(timed, key=lambda r: r.train["images_per_s"] if r.train else 0.0, default=None)
    verdict: dict[str, Any] = {"targets": ISSUE_TARGETS}
    if best is not None and best.train:
        verdict.update(
            best_variant=best.variant.name,
            best_images_per_s=best.train["images_per_s"],
            speedup=best.train.get("speedup_vs_paper_fp32"),
            mfu=best.train.get("mfu_vs_bf16_matmul"),
        )
        verdict["speedup_met"] = (verdict["speedup"] or 0) >= ISSUE_TARGETS["speedup_vs_paper_fp32"]
        verdict["mfu_met"] = (verdict["mfu"] or 0) >= ISSUE_TARGETS["mfu"]
    return {"variants": out, "verdict": verdict}


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"skyfuse bench/gpu.py on {meta['device']} ({meta['date']}, torch {meta['torch']})"
        + ("  [SMOKE: tiny sizes, not GPU figures]" if meta["smoke"] else ""),
        "| variant | batch | train img/s | x paper | infer img/s | x paper | peak GiB | MFU train |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in report["variants"]:
        tr, inf = v["train"] or {}, v["infer"] or {}
        if not tr:
            lines.append(f"| {v['name']} | {v['batch']} | {v['error'] or v['skipped']} |||||")
            continue
        mfu = tr.get("mfu_vs_bf16_matmul")
        lines.append(
            f"| {v['name']} | {v['batch']} | {fmt(tr.get('images_per_s'), ',.0f')} |"
            f" {fmt(tr.get('speedup_vs_paper_fp32'), '.2f')} | {fmt(inf.get('images_per_s'), ',.0f')} |"
            f" {fmt(inf.get('speedup_vs_paper_fp32'), '.2f')} | {fmt(tr.get('peak_memory_gib'), '.1f')} |"
            f" {fmt(None if mfu is None else 100 * mfu, '.1f')} % |"
        )
    peak = report["peak"]
    ours = next((v for v in report["variants"] if v["model"] == "ours" and v["flops"]), None)
    if ours:
        lines.append(
            f"model FLOPs per image (ours): train {ours['flops']['train_per_image'] / 1e9:,.4g} G,"
            f" inference {ours['flops']['infer_per_image'] / 1e9:,.4g} G;"
            f" measured bf16 matmul {fmt((peak.get('bf16_matmul_flops_per_s') or 0) / 1e12, ',.1f')} TFLOP/s"
        )
    v = report["verdict"]
    if "best_variant" in v:
        sp, mfu = v.get("speedup"), v.get("mfu")
        lines.append(
            f"targets: {v['best_variant']} {fmt(sp, '.2f')}x paper-fp32 (>= 8x: {'met' if v['speedup_met'] else 'NOT met'}),"
            f" MFU {fmt(None if mfu is None else 100 * mfu, '.1f')} % (>= 35 %: {'met' if v['mfu_met'] else 'NOT met'})"
        )
    loader = report.get("loader") or {}
    if loader.get("loader"):
        best = {}
        for r in loader["loader"]:
            best[r["path"]] = max(best.get(r["path"], 0.0), r["images_per_s"])
        lines.append(
            f"loader on this machine's CPUs ({max(r['workers'] for r in loader['loader'])} workers):"
            f" JPEG {best.get('jpeg', 0):,.0f} img/s, pixel cache {best.get('cache', 0):,.0f} img/s"
            f" (the GPU consumes {fmt(v.get('best_images_per_s'), ',.0f')} img/s)"
        )
    prof = report.get("profile")
    if prof:
        cats = ", ".join(
            f"{k} {100 * c['share']:.0f}%" for k, c in list(prof["categories"].items())[:6]
        )
        busy = prof.get("busy_fraction")
        lines.append(
            f"profile ({prof['variant']}): busy {fmt(None if busy is None else 100 * busy, '.0f')} % of wall; {cats}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=Path("gpu-bench.json"), help="JSON with every number"
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes and few steps (CPU test mode)")
    p.add_argument(
        "--smoke-compile", action="store_true", help="with --smoke, still run torch.compile"
    )
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--variants", default=None, help="comma-separated subset of the variant names")
    p.add_argument("--batch", type=int, default=256, help="batch of the large-batch variants")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode: default | max-autotune-no-cudagraphs | reduce-overhead")  # fmt: skip
    p.add_argument(
        "--steps", type=int, default=None, help="timed training steps (default 15; smoke 2)"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 3; smoke 1)"
    )
    p.add_argument("--no-profile", action="store_true", help="skip the profiler summary")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument(
        "--trace", type=Path, default=None, help="also write the Chrome trace here (large)"
    )
    p.add_argument(
        "--budget-s", type=float, default=280.0, help="skip variants that would overrun this"
    )
    p.add_argument(
        "--matmul-n", type=int, default=None, help="size of the peak matmul (default 8192)"
    )
    p.add_argument(
        "--tf32", action="store_true", help="allow TF32 for fp32 matmuls (off: true fp32)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (smoke: 1)")
    p.add_argument(
        "--extra", action="store_true", help="also max-autotune and CUDA-graph compiled variants"
    )
    p.add_argument(
        "--loader-images",
        type=int,
        default=None,
        help="time the input pipeline on this machine's CPUs over N synthetic 600 px JPEGs"
        " (default 256 on a GPU, 0 = off, off with --smoke)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    want = args.threads or (1 if args.smoke else None)
    if want:  # tiny smoke models run fastest on one thread, above all on a busy machine
        torch.set_num_threads(want)
    try:
        return _main(args, argv)
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    t0 = time.monotonic()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.smoke:
        print(
            "no CUDA device: the full-size run needs a GPU; use --smoke on a CPU", file=sys.stderr
        )
        return 2
    torch.backends.cuda.matmul.allow_tf32 = args.tf32  # PyTorch's default (False): true fp32 GEMMs
    if args.tf32:
        torch.backends.cudnn.allow_tf32 = True
    smoke = args.smoke
    sizes = smoke_sizes() if smoke else paper_sizes()
    variants = default_variants(8 if smoke else args.batch, args.compile_mode)
    if args.extra:
        variants += extra_variants(8 if smoke else args.batch)
    if smoke:
        variants = [replace(v, batch=4 if v.batch == 64 else 8) for v in variants]
    if args.variants:
        wanted = [w.strip() for w in args.variants.split(",") if w.strip()]
        known = {v.name: v for v in variants}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            print(
                f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(known)}",
                file=sys.stderr,
            )
            return 2
        variants = [known[w] for w in wanted]
    s = Settings(
        device=device,
        sizes=sizes,
        warmup=args.warmup if args.warmup is not None else (1 if smoke else 3),
        steps=args.steps if args.steps is not None else (2 if smoke else 15),
        infer_steps=args.steps if args.steps is not None else (2 if smoke else 15),
        smoke=smoke,
        smoke_compile=args.smoke_compile,
        profile_steps=args.profile_steps,
        trace=args.trace,
        deadline=t0 + args.budget_s,
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # the card's measured matmul ceilings, before the models take memory
    n = args.matmul_n or (256 if smoke else 8192)
    peak: dict[str, Any] = {"matmul_n": n}
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak["bf16_matmul_flops_per_s"] = matmul_rate(device, peak_dtype, n, iters=3 if smoke else 20)
    peak["bf16_matmul_dtype"] = str(
        peak_dtype
    )  # on a CPU: fp32 stands in (bf16 CPU matmul is slow)
    if not smoke:
        peak["fp32_matmul_flops_per_s"] = matmul_rate(device, torch.float32, n // 2, iters=10)
    log(f"[peak] {peak['bf16_matmul_flops_per_s'] / 1e12:,.1f} TFLOP/s ({peak_dtype}, n={n})")

    profile_target = None
    if not args.no_profile:
        candidates = [v.name for v in variants if v.model == "ours"]
        profile_target = candidates[-1] if candidates else None
    results = run_all(variants, s, profile_target, log)

    report: dict[str, Any] = {
        "meta": {
            **device_info(device),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "python": platform.python_version(),
            "smoke": smoke,
            "command": " ".join(
                [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
            ),
            "sizes": asdict(sizes),
            "steps": s.steps,
            "warmup": s.warmup,
            "tf32": args.tf32,
        },
        "peak": peak,
        **finish(results, peak),
    }
    prof = next((r for r in results if r.profile), None)
    if prof is not None:
        report["profile"] = {"variant": prof.variant.name, **(prof.profile or {})}
    n_loader = args.loader_images if args.loader_images is not None else (0 if smoke else 256)
    if n_loader > 0:
        if s.deadline - time.monotonic() > LOADER_S:
            try:
                report["loader"] = measure_loader(n_loader, sizes.image_size, log)
            except Exception as exc:
                report["loader"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                log(traceback.format_exc(limit=6))
        else:
            report["loader"] = {"skipped": "time budget"}
    report["meta"]["wall_s"] = time.monotonic() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")[1])
    tmp.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    tmp.replace(args.out)
    print(table(report))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
