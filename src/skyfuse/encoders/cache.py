"""On-disk cache of frozen encoder outputs: safetensors shards, one folder per encoder id.

Layout: ``<root>/<image|text>/<slug of encoder id>/*.safetensors``. Each shard holds, per entry key
(image sha256, or caption sha256 for text), ``<key>.tokens`` (n, D) fp16 holding the real tokens only
(padding is dropped and rebuilt on assembly) and ``<key>.pooled`` (D,) fp32; text shards may carry a
``token_lengths`` metadata entry (JSON key -> untruncated token count, for captions that filled
max_length) so that a cached run can report truncation without loading the tokenizer. Why this shape:
- the folder is named by the encoder id, which includes the weights hash and preprocessing, so a new
  encoder never sees stale features, and a changed image or caption has a new key;
- shards are written to a temporary name and renamed, so a kill never leaves a half-written shard, and
  each writer (process / device rank) writes its own shards, so concurrent runs need no locking;
- safetensors never unpickles, so a cache received from someone else cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from skyfuse.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "skyfuse-features-1"
KINDS = ("image", "text")
Entry = tuple[torch.Tensor, torch.Tensor]  # (tokens (n, D) fp16, pooled (D,) fp32)


def default_cache_dir() -> Path:
    """$SKYFUSE_CACHE_DIR, else $XDG_CACHE_HOME/skyfuse/features, else ~/.cache/skyfuse/features."""
    env = os.environ.get("SKYFUSE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "skyfuse" / "features"


def encoder_slug(encoder_id: str) -> str:
    """A file-system-safe, collision-free folder name for an encoder id."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id).strip("_")[:80]
    return f"{readable}-{hashlib.sha256(encoder_id.encode()).hexdigest()[:10]}"


def text_key(caption: str) -> str:
    """Cache key of a caption: sha256 of its UTF-8 text (identical captions share features)."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


class FeatureCache:
    """Frozen features of one encoder. `get` returns what is cached; `put` appends a new shard."""

    def __init__(self, root: Path, encoder_id: str, kind: str, *, dim: int | None = None) -> None:
        if kind not in KINDS:
            raise ConfigError(f"cache kind must be one of {KINDS}, got {kind!r}")
        self.root = Path(root).expanduser()
        self.encoder_id = encoder_id
        self.kind = kind
        self.dim = dim
        self.dir = self.root / kind / encoder_slug(encoder_id)
        self._index: dict[str, Path] | None = None
        self._lengths: dict[str, int] = {}

    # -- index ---------------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.safetensors")) if self.dir.is_dir() else []

    def index(self, refresh: bool = False) -> dict[str, Path]:
        """key -> shard path, read from shard headers only (no tensor data)."""
        if self._index is None or refresh:
            index: dict[str, Path] = {}
            lengths: dict[str, int] = {}
            for shard in self._shards():
                try:
                    with safe_open(str(shard), framework="pt") as f:
                        meta = f.metadata() or {}
                        if meta.get("encoder_id") != self.encoder_id:
                            log.warning("%s: shard of another encoder ignored", shard)
                            continue
                        if meta.get("token_lengths"):
                            lengths.update(
                                {
                                    str(k): int(v)
                                    for k, v in json.loads(meta["token_lengths"]).items()
                                }
                            )
                        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                            if name.endswith(".pooled"):
                                index[name[: -len(".pooled")]] = shard
                except Exception as exc:
                    log.warning("%s: unreadable cache shard ignored (%s); delete it", shard, exc)
            self._index = index
            self._lengths = lengths
        return self._index

    def token_lengths(self) -> dict[str, int]:
        """key -> untruncated token count, recorded for captions that filled the encoder's max_length."""
        self.index()
        return dict(self._lengths)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.index()

    def __len__(self) -> int:
        return len(self.index())

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys not cached yet, in first-seen order, without duplicates."""
        index = self.index()
        return [k for k in dict.fromkeys(keys) if k not in index]

    # -- read / write --------------------------------------------------------------------------
    def get(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Cached entries for `keys` (absent keys are left out; damaged shards count as misses)."""
        index = self.index()
        by_shard: dict[Path, list[str]] = {}
        for k in dict.fromkeys(keys):
            if k in index:
                by_shard.setdefault(index[k], []).append(k)
        out: dict[str, Entry] = {}
        for shard, ks in by_shard.items():
            try:
                with safe_open(str(shard), framework="pt") as f:
                    for k in ks:
                        tokens, pooled = f.get_tensor(f"{k}.tokens"), f.get_tensor(f"{k}.pooled")
                        if self.dim is not None and (
                            tokens.shape[-1] != self.dim or pooled.shape[-1] != self.dim
                        ):
                            continue
                        out[k] = (tokens, pooled)
            except Exception as exc:
                log.warning("%s: unreadable cache shard ignored (%s); delete it", shard, exc)
        return out

    def put(
        self, entries: Mapping[str, Entry], *, lengths: Mapping[str, int] | None = None
    ) -> Path | None:
        """Write entries as one new shard, atomically; returns its path (None when empty).

        `lengths` (key -> untruncated token count) is stored in the shard's metadata.
        """
        if not entries:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "encoder.json"
        if not info.exists():
            _atomic_write_text(info, json.dumps({"encoder_id": self.encoder_id, "kind": self.kind}))
        tensors: dict[str, torch.Tensor] = {}
        for k, (tokens, pooled) in entries.items():
            tensors[f"{k}.tokens"] = tokens.detach().to("cpu", torch.float16).contiguous()
            tensors[f"{k}.pooled"] = pooled.detach().to("cpu", torch.float32).contiguous()
        name = f"{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        final = self.dir / name
        tmp = self.dir / f".{name}.tmp"
        meta = {"encoder_id": self.encoder_id, "kind": self.kind, "format": FORMAT}
        kept = {k: int(v) for k, v in (lengths or {}).items() if k in entries}
        if kept:
            meta["token_lengths"] = json.dumps(kept, sort_keys=True)
        try:
            save_file(tensors, str(tmp), metadata=meta)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        if self._index is not None:
            for k in entries:
                self._index[k] = final
            self._lengths.update(kept)
        return final


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
