"""The batch runner: caption every image of a scene folder into a store, resumably.

It owns what every backend shares: the work list (sorted, sharded, limited), skipping what the store
already holds (same image bytes + model + prompt hash), concurrency (asyncio for network backends,
threads for thread-safe local ones), per-image failure records and the progress bar.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from skyfuse.captioning.base import Captioner, CaptionFailure, FatalCaptionError, ImageJob
from skyfuse.captioning.prompts import NO_PROMPT, Prompt, resolve_prompt
from skyfuse.captioning.store import CaptionStore, make_record, utc_now
from skyfuse.data.folder import Sample, SceneFolder
from skyfuse.data.images import sha256_bytes
from skyfuse.errors import BadInputError, ConfigError
from skyfuse.progress import ProgressReporter, resolve_progress


@dataclass
class CaptionRunSummary:
    """What a run did. `complete` is true when every image in scope now has a caption."""

    out: Path
    total: int = 0
    skipped: int = 0
    captioned: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return (
            self.failed == 0 and not self.unreadable and self.skipped + self.captioned == self.total
        )

    @property
    def rate(self) -> float:
        return self.captioned / self.elapsed_s if self.elapsed_s > 0 else 0.0


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` with 0 <= i < n (zero-based), e.g. ``0/4`` .. ``3/4``."""
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ConfigError(f"--shard {spec!r}: expected i/n, e.g. 0/4 (zero-based)") from None
    check_shard((i, n))
    return i, n


def check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard {i}/{n}: need 0 <= i < n (zero-based), e.g. 0/4 .. 3/4")


def in_shard(rel: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic across machines and stable when images are added: a hash of the path."""
    if shard is None:
        return True
    i, n = shard
    return int.from_bytes(hashlib.sha1(rel.encode("utf-8")).digest()[:8], "big") % n == i


def select_samples(
    folder: SceneFolder, shard: tuple[int, int] | None, limit: int | None
) -> list[Sample]:
    samples = sorted((s for s in folder.samples if in_shard(s.rel, shard)), key=lambda s: s.rel)
    if limit is not None:
        if limit < 0:
            raise ConfigError(f"--limit {limit}: must be >= 0")
        samples = samples[:limit]
    return samples


ProgressHook = Callable[[int, int], None]


@contextmanager
def _bar(progress: bool | ProgressReporter, total: int) -> Iterator[ProgressHook]:
    with resolve_progress(progress) as bar:
        task = bar.add_task("captioning", total=total)

        def hook(done: int, failed: int) -> None:
            bar.update(task, completed=done, extra=f"failed {failed}" if failed else "")

        yield hook


class _Run:
    def __init__(
        self,
        captioner: Captioner,
        prompt: Prompt,
        store: CaptionStore,
        summary: CaptionRunSummary,
        hook: ProgressHook,
    ) -> None:
        self.captioner = captioner
        self.prompt = prompt if captioner.uses_prompt else NO_PROMPT
        self.store = store
        self.summary = summary
        self.hook = hook
        self.params = captioner.params()
        self.lock = threading.Lock()
        self.done = summary.skipped

    def key(self, sha: str) -> tuple[str, str, str]:
        return (sha, self.captioner.model, self.prompt.hash)

    def load(self, sample: Sample) -> ImageJob | None:
        """Read bytes and hash; returns None when the store already has this work."""
        try:
            data = sample.path.read_bytes()
        except OSError as exc:
            self.summary.unreadable.append((sample.rel, f"cannot read ({exc.strerror or exc})"))
            return None
        sha = sha256_bytes(data)
        key = self.key(sha)
        with self.lock:  # the writer thread updates the same counters
            if self.store.has(sample.rel, key):
                self.summary.skipped += 1
                self.done += 1
                return None
            if self.store.is_done(key):  # the same image under another path: reuse its caption
                copy = dict(self.store.state.done[key])
                copy.update(
                    path=sample.rel, time=utc_now(), latency_s=0.0, copied_from=copy["path"]
                )
                self.store.append(copy)
                self.summary.skipped += 1
                self.done += 1
                return None
        return ImageJob(sample.path, sample.rel, sha, data)

    def record(self, job: ImageJob, result: str | CaptionFailure, latency: float) -> None:
        self.record_many([(job, result, latency)])

    def record_many(self, items: list[tuple[ImageJob, str | CaptionFailure, float]]) -> None:
        """Make results durable (one write + fsync for all) and count them."""
        recs, errors = [], []
        for job, result, latency in items:
            if isinstance(result, str) and not result.strip():
                result = CaptionFailure("the backend returned an empty caption")
            error = (
                (str(result) or type(result).__name__)
                if isinstance(result, CaptionFailure)
                else None
            )
            errors.append(error)
            recs.append(
                make_record(
                    rel=job.rel,
                    sha256=job.sha256,
                    caption=None if error is not None else str(result).strip(),
                    backend=self.captioner.backend,
                    model=self.captioner.model,
                    prompt_id=self.prompt.id,
                    prompt_hash=self.prompt.hash,
                    params=self.params,
                    is_vlm=self.captioner.is_vlm,
                    latency_s=latency,
                    error=error,
                )
            )
        with self.lock:
            self.store.append_many(recs)
            for (job, _, _), error in zip(items, errors, strict=True):
                if error is None:
                    self.summary.captioned += 1
                else:
                    self.summary.failed += 1
                    self.summary.failures.append((job.rel, error))
                self.done += 1
            self.hook(self.done, self.summary.failed)


def _unexpected(exc: Exception) -> CaptionFailure:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return CaptionFailure(f"unexpected {type(exc).__name__}: {first[:200]}".rstrip(": "))


class _GroupCommit:
    """Writes results from a helper thread so that fsync never blocks the event loop; results that
    arrive while a write is in progress are committed together by the next one."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.pending: list[tuple[ImageJob, str | CaptionFailure, float, asyncio.Future[None]]] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="caption-store")
        self.busy = False

    async def commit(self, job: ImageJob, result: str | CaptionFailure, latency: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((job, result, latency, fut))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    items = [(j, r, t) for j, r, t, _ in batch]
                    await loop.run_in_executor(self.pool, self.run.record_many, items)
                except BaseException as exc:
                    for *_, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    raise
                for *_, f in batch:
                    if not f.done():
                        f.set_result(None)
        finally:
            self.busy = False

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _run_sync(run: _Run, samples: list[Sample], concurrency: int) -> None:
    cap = run.captioner
    bs = max(1, cap.batch_size)

    def batches() -> Iterator[list[ImageJob]]:
        batch: list[ImageJob] = []
        for s in samples:
            job = run.load(s)
            if job is None:
                run.hook(run.done, run.summary.failed)
                continue
            batch.append(job)
            if len(batch) == bs:
                yield batch
                batch = []
        if batch:
            yield batch

    def work(batch: list[ImageJob]) -> None:
        t0 = time.perf_counter()
        try:
            results = cap.caption_batch(batch, run.prompt)
        except CaptionFailure as exc:
            results = [exc] * len(batch)
        except FatalCaptionError:
            raise
        except Exception as exc:  # one bad batch must not end a long batch job
            results = [_unexpected(exc)] * len(batch)
        per = (time.perf_counter() - t0) / len(batch)
        if len(results) != len(batch):
            raise RuntimeError(
                f"{type(cap).__name__} returned {len(results)} captions for {len(batch)}"
            )
        run.record_many([(job, res, per) for job, res in zip(batch, results, strict=True)])

    workers = concurrency if cap.thread_safe else 1
    if workers <= 1:
        for batch in batches():
            work(batch)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = []
        for batch in batches():
            pending.append(pool.submit(work, batch))
            if len(pending) >= 2 * workers:
                pending.pop(0).result()
        for f in pending:
            f.result()


async def _run_async(run: _Run, samples: list[Sample], concurrency: int) -> None:
    cap = run.captioner
    sem = asyncio.Semaphore(concurrency)
    fatal: list[BaseException] = []
    writer = _GroupCommit(run)

    async def one(job: ImageJob) -> None:
        released = False
        try:
            if fatal:
                return
            t0 = time.perf_counter()
            try:
                res: str | CaptionFailure = await cap.acaption(job, run.prompt)
            except CaptionFailure as exc:
                res = exc
            except FatalCaptionError:
                raise
            except Exception as exc:  # one image must not end a long batch job
                res = _unexpected(exc)
            # the slot bounds requests in flight: free it before the (fsynced) write
            sem.release()
            released = True
            await writer.commit(job, res, time.perf_counter() - t0)
        except FatalCaptionError as exc:
            fatal.append(exc)
        finally:
            if not released:
                sem.release()

    tasks: set[asyncio.Task[None]] = set()
    try:
        for s in samples:
            if fatal:
                break
            job = run.load(s)
            if job is None:
                run.hook(run.done, run.summary.failed)
                continue
            await sem.acquire()
            t = asyncio.create_task(one(job))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await cap.aclose()
        writer.close()
    if fatal:
        raise fatal[0]


def caption_folder(
    root: Path,
    captioner: Captioner,
    out: Path,
    *,
    prompt: str | Path | Prompt = "ground",
    concurrency: int = 8,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    progress: bool | ProgressReporter = True,
) -> CaptionRunSummary:
    """Caption the images of a scene folder into the JSONL store `out`, resuming where it stopped.

    Raises `ConfigError`/`BadInputError` for bad arguments, and `BadInputError` with the backend's
    explanation when the whole run cannot proceed (bad API key, unknown model, missing weights).
    """
    if concurrency < 1:
        raise ConfigError(f"--concurrency {concurrency}: must be >= 1")
    if shard is not None:
        check_shard(shard)
    folder = SceneFolder(root)
    samples = select_samples(folder, shard, limit)
    the_prompt = resolve_prompt(prompt)
    summary = CaptionRunSummary(out=Path(out), total=len(samples))
    t0 = time.perf_counter()
    with CaptionStore(Path(out)) as store, _bar(progress, len(samples)) as hook:
        run = _Run(captioner, the_prompt, store, summary, hook)
        try:
            if captioner.is_async:
                _run_in_loop(_run_async(run, samples, concurrency))
            else:
                _run_sync(run, samples, concurrency)
        except FatalCaptionError as exc:
            raise BadInputError(str(exc)) from None
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _run_in_loop(coro: object) -> None:
    """asyncio.run, also from inside a running loop (e.g. a notebook) via a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]
