"""Captioning: VLM backends, the resumable caption store, caption import and the leakage audit.

Light to import: backends load torch / transformers / httpx only when they are created.
"""

from skyfuse.captioning.audit import AuditReport, audit_captions, caption_overlap, mask_captions
from skyfuse.captioning.base import (
    Captioner,
    CaptionFailure,
    FatalCaptionError,
    ImageJob,
    create_captioner,
    list_captioners,
)
from skyfuse.captioning.job import CaptionJob, run_caption_job
from skyfuse.captioning.load import load_captions
from skyfuse.captioning.prompts import Prompt, builtin_prompts, resolve_prompt
from skyfuse.captioning.runner import CaptionRunSummary, caption_folder, parse_shard
from skyfuse.captioning.sources import join_sentences
from skyfuse.captioning.store import CaptionStore, MergeReport, merge_stores, read_records

__all__ = [
    "AuditReport",
    "CaptionFailure",
    "CaptionJob",
    "CaptionRunSummary",
    "CaptionStore",
    "Captioner",
    "FatalCaptionError",
    "ImageJob",
    "MergeReport",
    "Prompt",
    "audit_captions",
    "builtin_prompts",
    "caption_folder",
    "caption_overlap",
    "create_captioner",
    "join_sentences",
    "list_captioners",
    "load_captions",
    "mask_captions",
    "merge_stores",
    "parse_shard",
    "read_records",
    "resolve_prompt",
    "run_caption_job",
]
