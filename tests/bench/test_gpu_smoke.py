"""bench/gpu.py --smoke on the CPU: the GPU benchmark's code path stays working between GPU runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"skyfuse_bench_{name}", REPO / "bench" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu() -> ModuleType:
    return load("gpu")


@pytest.fixture(scope="module")
def smoke(gpu: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    import contextlib
    import io

    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = gpu.main(["--smoke", "--out", str(out)])
    assert rc == 0, buf.getvalue()
    return json.loads(out.read_text()), buf.getvalue()


def test_smoke_measures_every_variant(smoke: tuple[dict[str, Any], str]) -> None:
    report, _ = smoke
    names = [v["name"] for v in report["variants"]]
    assert names == ["paper-fp32", "ours-fp32", "ours-bf16", "ours-bf16-b8", "ours-compiled"]
    for v in report["variants"]:
        assert v["error"] is None, v["error"]
        for phase in ("train", "infer"):
            m = v[phase]
            assert m["images_per_s"] > 0 and m["step_ms_median"] > 0
            assert 0 < m["mfu_vs_bf16_matmul"] < 1
        assert v["flops"]["train_per_image"] > 2 * v["flops"]["infer_per_image"] > 0
    paper, ours = report["variants"][0], report["variants"][1]
    assert paper["train"]["speedup_vs_paper_fp32"] == pytest.approx(1.0)
    assert set(paper["attention"].values()) == {"eager"}
    assert set(ours["attention"].values()) == {"sdpa"}
    assert report["meta"]["smoke"] is True and report["peak"]["bf16_matmul_flops_per_s"] > 0
    assert "torch.compile skipped" in report["variants"][-1]["skipped"]


def test_smoke_profile_and_table(smoke: tuple[dict[str, Any], str]) -> None:
    report, printed = smoke
    prof = report["profile"]
    assert prof["variant"] == "ours-compiled"
    assert prof["top"] and prof["busy_ms_per_step"] > 0
    assert sum(c["share"] for c in prof["categories"].values()) == pytest.approx(1.0)
    assert "gemm" in prof["categories"]
    verdict = report["verdict"]
    assert verdict["best_variant"] in [v["name"] for v in report["variants"]]
    assert verdict["speedup_met"] is False or verdict["speedup"] >= 8
    last = printed.strip().splitlines()
    assert "SMOKE" in last[0] and "| paper-fp32 |" in printed and last[-1].startswith("profile")


def test_kernel_categories(gpu: ModuleType) -> None:
    cat = gpu.categorise
    assert cat("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "gemm"
    assert cat("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN") == "gemm"
    assert cat("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>") == "attention"
    assert cat("fmha_cutlassB_f32_aligned_64x64_k64_sm80") == "attention"
    assert cat("Memcpy HtoD (Pinned -> Device)") == "memcpy/memset"
    assert (
        cat("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float>")
        == "layer norm"
    )
    assert cat("triton_poi_fused_add_native_layer_norm_0") == "layer norm"
    assert cat("triton_red_fused__to_copy_sum_3") == "compiled fused (triton)"
    assert (
        cat("void at::native::(anonymous)::multi_tensor_apply_kernel<FusedAdamMathFunctor>")
        == "optimizer"
    )
    assert cat("aten::addmm") == "gemm"


def test_cli_refuses_bad_requests(gpu: ModuleType, tmp_path: Path) -> None:
    assert gpu.main(["--smoke", "--variants", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert (
        gpu.main(["--device", "cpu", "--out", str(tmp_path / "x.json")]) == 2
    )  # full size needs a GPU


def test_loader_bench_runs(tmp_path: Path) -> None:
    """bench/loader.py end to end on a few generated JPEGs (both paths, no worker processes)."""
    import numpy as np
    from PIL import Image

    loader = load("loader")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / "data" / cls / f"{i}.jpg"
            )
    out = tmp_path / "loader.json"
    rc = loader.main(
        ["--data", str(tmp_path / "data"), "--limit", "12", "--size", "32", "--workers", "0",
         "--batch", "4", "--batches", "2", "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    result = json.loads(out.read_text())
    paths = {r["path"]: r["images_per_s"] for r in result["loader"]}
    assert set(paths) == {"jpeg", "cache"} and all(v > 0 for v in paths.values())
    assert result["cached"] == 12 and result["cache_build"]["bytes"] >= 12 * 32 * 32 * 3


def test_profile_summary_on_a_gpu_trace(gpu: ModuleType) -> None:
    """The CUDA branch of the summary (not reachable on a CPU) on a hand-made event list."""
    from types import SimpleNamespace

    import torch

    def ev(
        key: str, us: float, device: str = "DeviceType.CUDA", count: int = 3, ann: bool = False
    ) -> Any:
        return SimpleNamespace(
            key=key, count=count, device_type=device, self_device_time_total=us,
            self_cpu_time_total=5.0, is_user_annotation=ann,
        )  # fmt: skip

    events = [
        ev("sm90_xmma_gemm_bf16bf16_bf16f32", 6000),
        ev("void pytorch_flash::flash_fwd_kernel<>", 1500),
        ev("triton_per_fused_native_layer_norm_3", 1500),
        ev("Memcpy HtoD (Pinned -> Device)", 1000),
        ev("aten::mm", 6000, device="DeviceType.CPU"),  # a CPU op: its kernel is counted above
        ev("## Call CompiledFxGraph ##", 9000, ann=True),  # an annotation spanning kernels
    ]
    prof = SimpleNamespace(key_averages=lambda: events)
    summary = gpu.summarize_profile(prof, torch.device("cuda"), steps=3, wall_s=0.012)
    assert summary["busy_ms_per_step"] == pytest.approx(10.0 / 3)
    assert summary["busy_fraction"] == pytest.approx((10.0 / 3) / 4.0)
    cats = summary["categories"]
    assert cats["gemm"]["share"] == pytest.approx(0.6)
    assert cats["attention"]["share"] == cats["layer norm"]["share"] == pytest.approx(0.15)
    assert cats["memcpy/memset"]["share"] == pytest.approx(0.1)
    assert summary["top"][0]["name"].startswith("sm90_xmma_gemm")
    assert len(summary["top"]) == 4 and summary["top"][0]["calls_per_step"] == 1
