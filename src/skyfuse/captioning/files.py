"""The `files` backend: import captions that already exist instead of generating them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from skyfuse.captioning.base import CAPTIONERS, Captioner, CaptionFailure, ImageJob
from skyfuse.captioning.load import finalize
from skyfuse.captioning.matching import NameIndex
from skyfuse.captioning.prompts import Prompt
from skyfuse.captioning.sources import read_source
from skyfuse.errors import ConfigError

JOIN_RULE = "clean+dedup+join-v1"


@CAPTIONERS.register("files")
class FilesCaptioner(Captioner):
    """Looks each image up in a caption source (see `skyfuse.captioning.sources` for formats)."""

    backend: ClassVar[str] = "files"
    uses_prompt: ClassVar[bool] = False
    thread_safe: ClassVar[bool] = True

    def __init__(
        self,
        source: str | Path | None = None,
        model: str | None = None,
        is_vlm: bool | None = None,
        batch_size: int = 64,
    ) -> None:
        if source is None:
            raise ConfigError("the files backend needs --source FILE_OR_FOLDER with the captions")
        self.source = Path(source).expanduser()
        raw, self.format = read_source(self.source)
        self.captions = finalize(raw, self.format)
        self.index = NameIndex(self.captions)
        self.model = model or f"files:{self.source.name}"
        self.batch_size = batch_size
        # provenance: the paper's text/ tree is VLM output, the human caption sets are not;
        # unknown sources are recorded as not VLM-written unless the caller says otherwise
        self.is_vlm = bool(is_vlm) if is_vlm is not None else self.format == "text-tree"

    def params(self) -> dict[str, Any]:
        return {"source": str(self.source), "format": self.format, "join": JOIN_RULE}

    def caption_batch(self, jobs: list[ImageJob], prompt: Prompt) -> list[str | CaptionFailure]:
        out: list[str | CaptionFailure] = []
        for job in jobs:
            name = self.index.lookup(job.rel)
            if name is None:
                out.append(CaptionFailure(f"no caption for this image in {self.source}"))
            else:
                out.append(self.captions[name])
        return out
