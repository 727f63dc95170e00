"""Stream protocol: does the live path earn its complexity?

1. Global time split at the 80th percentile of timestamps.
2. The batch path (`train_bundle`) trains on the earlier part; its CF candidates are published to
   the candidate cache and its bundle is loaded by the online path's ModelProvider.
3. The earlier part is replayed through the real FeatureUpdater (in-memory stores with the
   adapters' semantics: same domain code), so user features, sessions and trending are what a
   running system would hold at the cut.
4. The later interactions are replayed in time order through the same updater. Before each
   sampled event (seeded, capped by `max_events`) the user's top-k is asked of:
   - popularity: training-period popularity; trending: the live trending store
   - batch_only: the user's published CF candidates ordered by CF score (popularity top-up for
     users without candidates, as a batch-only system would answer them)
   - pipeline_without_live: the real Recommender with the live stores detached (no session,
     user features or trending): CF candidates + bundle popularity through the TFLite ranker
   - pipeline: the real Recommender (reads, candidates, FeatureAssembler, TFLite ranker, rules)
   each excluding what the user already interacted with; the event's item is the one relevant item.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from recpipe.domain.catalogue import InteractionLog
from recpipe.ranking_metrics import RankingAccumulator

from recpipe_dev.evaluation.data import Dataset
from recpipe_dev.evaluation.splits import time_split

Progress = Callable[[str], None]
#: The online API caps `exclude` at this many ids; longer histories are filtered after the call.
MAX_EXCLUDE = 500
MAX_K = 100
UPDATE_BATCH = 500


@dataclass(slots=True)
class StreamProtocolConfig:
    k: int = 10
    seed: int = 42
    quantile: float = 0.8
    max_events: int = 5000
    #: Restrict to a seeded subset of users (CI smoke); None = all.
    max_users: int | None = None
    #: Training parameters override for train_bundle (None = the project's defaults).
    train_params: Any = None
    #: Progress bar for the replay (stderr).
    show_progress: bool = True


class _Clock:
    """Replay time: every component reads the event time, not the wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_stream(
    dataset: Dataset, config: StreamProtocolConfig, progress: Progress = lambda _: None
) -> dict[str, Any]:
    t_start = time.perf_counter()
    seed = config.seed
    rng = np.random.default_rng(seed)
    log = dataset.log
    if config.max_users is not None:
        all_users = np.unique(log.users)
        if config.max_users < len(all_users):
            keep = rng.choice(all_users, config.max_users, replace=False)
            log = log.take(np.isin(log.users, keep))
    log = log.sorted_by_time()
    train_mask, cut = time_split(log, config.quantile)
    test_rows = np.flatnonzero(~train_mask)
    sampled = np.zeros(len(log), np.bool_)
    n_eval = min(config.max_events, len(test_rows))
    sampled[rng.choice(test_rows, n_eval, replace=False)] = True

    scratch = tempfile.TemporaryDirectory(prefix="recpipe-eval-")
    try:
        return _run(
            dataset,
            config=config,
            progress=progress,
            log=log,
            train_mask=train_mask,
            cut=cut,
            sampled=sampled,
            workdir=Path(scratch.name),
            t_start=t_start,
        )
    finally:
        scratch.cleanup()


class ProductHarness:
    """The project's three paths wired in-process for offline replay: `train_bundle` on the
    training rows, its CF candidates in a candidate cache, the real FeatureUpdater over
    in-memory stores (the adapters' semantics) and the real Recommender, all on replay time."""

    def __init__(
        self,
        dataset: Dataset,
        log: InteractionLog,
        train_rows: npt.NDArray[np.int64],
        workdir: Path,
        *,
        seed: int,
        train_params: Any = None,
        progress: Progress = lambda _: None,
    ) -> None:
        from recpipe.serving.model_provider import LocalBundleSource, ModelProvider
        from recpipe.serving.reads import Bulkhead, DeadlineRunner, RequestReader, TrendingCache
        from recpipe.serving.recommender import Recommender
        from recpipe.stream.updater import FeatureUpdater
        from recpipe.training.pipeline import train_bundle

        from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
        from recpipe_dev.testing.fakes_stream import (
            InMemoryFailureSink,
            InMemorySessionStore,
            InMemoryTrendingStore,
            InMemoryUserFeatureStore,
        )

        self.log = log
        train_rows = train_rows[np.argsort(log.ts[train_rows], kind="stable")]
        train_log = log.take(train_rows)
        t0 = time.perf_counter()
        self.version = f"eval-{seed}"
        self.trained = train_bundle(
            train_log, dataset.catalogue, workdir, version=self.version, params=train_params
        )
        self.train_seconds = time.perf_counter() - t0
        progress(f"batch path trained on {len(train_log)} interactions in {self.train_seconds:.1f} s")
        self.cache = InMemoryCandidateCache()
        self.cache.publish(self.version, self.trained.candidates.pairs(), {"source": "evaluation"})

        self.clock = _Clock(float(log.ts[train_rows[0]]) if len(train_rows) else 0.0)
        self.users = InMemoryUserFeatureStore()
        self.sessions = InMemorySessionStore(clock=self.clock)
        self.trending = InMemoryTrendingStore(clock=self.clock)
        categories = {m.item_id: list(m.categories) for m in dataset.catalogue}
        self.updater = FeatureUpdater(
            self.users,
            self.sessions,
            self.trending,
            InMemoryFailureSink(),
            lambda item: categories.get(item, ()),
            clock=self.clock,
        )
        self._seq = 0
        t0 = time.perf_counter()
        self.apply(train_rows.tolist())
        self.warm_seconds = time.perf_counter() - t0
        progress(f"stream path warmed with {len(train_rows)} events in {self.warm_seconds:.1f} s")

        self.provider = ModelProvider(
            LocalBundleSource(self.trained.bundle_dir), background=False, refresh_s=1e12
        )
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="eval-reads")
        runner = DeadlineRunner(self._executor, Bulkhead(limit=16))
        # Generous deadlines: the evaluation measures quality; latency has its own benchmark.
        reader = RequestReader(
            runner,
            candidates=self.cache,
            sessions=self.sessions,
            users=self.users,
            trending=TrendingCache(self.trending, ttl_s=0.0),
            timeout_s=10.0,
        )
        self.recommender = Recommender(
            self.provider, reader, runner, content=None, budget_s=10.0, read_timeout_s=10.0, clock=self.clock
        )
        if self.provider.current() is None:
            raise RuntimeError(
                f"the trained bundle did not load: {self.provider.last_error} {self.provider.failed_versions}"
            )
        # Ablation: the same online code with the live stores detached (CF candidates, bundle
        # popularity and the ranker only): what the batch model gives without the stream path.
        batch_reader = RequestReader(
            runner, candidates=self.cache, sessions=None, users=None, trending=None, timeout_s=10.0
        )
        self.batch_recommender = Recommender(
            self.provider,
            batch_reader,
            runner,
            content=None,
            budget_s=10.0,
            read_timeout_s=10.0,
            clock=self.clock,
        )
        self.post_filtered = 0

    def apply(self, rows: list[int]) -> None:
        """Feed log rows to the FeatureUpdater as Kinesis-shaped records, in batches."""
        from recpipe.stream.updater import StreamRecord

        log = self.log
        for start in range(0, len(rows), UPDATE_BATCH):
            chunk = rows[start : start + UPDATE_BATCH]
            records = []
            for r in chunk:
                event = log.event(r)
                self._seq += 1
                records.append(
                    StreamRecord(
                        str(self._seq), json.dumps(event.to_record()).encode(), partition_key=event.user_id
                    )
                )
            self.clock.now = float(log.ts[chunk[-1]]) + 1.0
            result = self.updater.process(records)
            if result.failed or result.poison:
                raise RuntimeError(
                    f"feature updater failed {len(result.failed)} / poisoned {result.poison} records"
                )

    def cf(self, user_id: str) -> list[str]:
        return [i for i, _ in self.cache.get(user_id)]

    def ask(self, user_id: str, history: set[str], k: int, *, live: bool = True) -> tuple[list[str], Any]:
        """Top-k from the online path, never an item of `history` (sent as `exclude` within the
        API's cap, else k=100 filtered after)."""
        from recpipe.serving.request import RecommendationRequest

        if len(history) <= MAX_EXCLUDE:
            req = RecommendationRequest.model_validate(
                {"user_id": user_id, "k": k, "exclude": sorted(history)}
            )
        else:
            req = RecommendationRequest.model_validate({"user_id": user_id, "k": MAX_K})
            self.post_filtered += 1
        result = (self.recommender if live else self.batch_recommender).recommend(req)
        return [it["item_id"] for it in result.items if it["item_id"] not in history][:k], result

    def close(self) -> None:
        self._executor.shutdown(wait=False)


def _run(
    dataset: Dataset,
    *,
    config: StreamProtocolConfig,
    progress: Progress,
    log: InteractionLog,
    train_mask: npt.NDArray[np.bool_],
    cut: float,
    sampled: npt.NDArray[np.bool_],
    workdir: Path,
    t_start: float,
) -> dict[str, Any]:
    k, seed = config.k, config.seed
    train_log = log.take(train_mask)
    test_rows = np.flatnonzero(~train_mask)
    n_eval = int(sampled.sum())
    product = ProductHarness(
        dataset,
        log,
        np.flatnonzero(train_mask),
        workdir,
        seed=seed,
        train_params=config.train_params,
        progress=progress,
    )
    clock, trending, trained = product.clock, product.trending, product.trained
    item_ids = log.item_vocab
    train_counts = np.bincount(train_log.items, minlength=len(item_ids))
    popular_order = [item_ids[i] for i in np.argsort(-train_counts, kind="stable")[: MAX_K + MAX_EXCLUDE]]
    seen: dict[str, set[str]] = defaultdict(set)
    for u, i in zip(train_log.users.tolist(), train_log.items.tolist(), strict=True):
        seen[log.user_vocab[u]].add(item_ids[i])

    catalogue_size = int(trained.manifest.get("n_items", len(item_ids)))
    names = ("popularity", "trending", "batch_only", "pipeline_without_live", "pipeline")
    segments = ("all", "known_users", "new_users")
    accs = {
        (seg, name): RankingAccumulator(k=k, catalogue_size=catalogue_size)
        for seg in segments
        for name in names
    }
    known_users = {log.user_vocab[u] for u in np.unique(train_log.users).tolist()}
    degraded_counts: dict[str, int] = defaultdict(int)
    session_hits = 0
    latencies: list[float] = []

    def first_k(ranked: list[str], exclude: set[str]) -> list[str]:
        return [i for i in ranked if i not in exclude][:k]

    pending: list[int] = []
    t0 = time.perf_counter()
    bar: Any = None
    if config.show_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n_eval, desc="stream replay", unit="req", mininterval=2.0)
        except ImportError:  # progress is cosmetic
            bar = None
    for r in test_rows.tolist():
        if not sampled[r]:
            pending.append(r)
            continue
        if pending:
            product.apply(pending)
            pending = []
        user_id = log.user_vocab[int(log.users[r])]
        target = {item_ids[int(log.items[r])]}
        clock.now = float(log.ts[r])
        history = seen[user_id]
        segment = "known_users" if user_id in known_users else "new_users"
        popular = first_k(popular_order, history)
        cf = product.cf(user_id)
        lists = {
            "popularity": popular,
            "trending": first_k([i for i, _ in trending.top(clock.now, MAX_K + len(history))], history),
            # A batch-only system still answers a user without CF candidates: popularity top-up.
            "batch_only": first_k(cf + popular_order, history),
        }
        lists["pipeline_without_live"], _ = product.ask(user_id, history, k, live=False)
        lists["pipeline"], result = product.ask(user_id, history, k)
        latencies.append(result.took_ms)
        for name in result.degraded:
            degraded_counts[name] += 1
        if any("session" in it.get("sources", []) for it in result.items if it["item_id"] in target):
            session_hits += 1
        for name, ranked in lists.items():
            for seg in ("all", segment):
                accs[(seg, name)].add(ranked, target)
        product.apply([r])
        history.add(next(iter(target)))
        if bar is not None:
            bar.update(1)
    if pending:
        product.apply(pending)
    if bar is not None:
        bar.close()
    product.close()
    replay_s = time.perf_counter() - t0

    by_segment = {
        seg: {name: {m: round(v, 6) for m, v in accs[(seg, name)].result().items()} for name in names}
        for seg in segments
    }
    methods = by_segment["all"]
    pipe, batch, pop = (methods[n][f"ndcg@{k}"] for n in ("pipeline", "batch_only", "popularity"))
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "protocol": "stream",
        "k": k,
        "dataset": dataset.name,
        "methods": methods,
        "by_segment": {seg: by_segment[seg] for seg in ("known_users", "new_users")},
        "ratios": {
            f"pipeline_vs_batch_ndcg@{k}": round(pipe / batch, 4) if batch else None,
            f"pipeline_vs_popularity_ndcg@{k}": round(pipe / pop, 4) if pop else None,
            f"pipeline_vs_trending_ndcg@{k}": round(pipe / methods["trending"][f"ndcg@{k}"], 4)
            if methods["trending"][f"ndcg@{k}"]
            else None,
        },
        "online": {
            "requests": len(latencies),
            "degraded": dict(degraded_counts),
            "post_filtered_requests": product.post_filtered,
            "hits_from_session_candidates": session_hits,
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
        },
        "batch_path": {
            "version": product.version,
            "metrics": trained.metrics,
            "seconds": round(product.train_seconds, 2),
        },
        "config": {
            "seed": seed,
            "split": f"global time split at the {config.quantile:.0%} quantile of timestamps",
            "cut_ts": cut,
            "relevance": "the next interaction's item; the user's earlier items are excluded",
            "users": len(np.unique(log.users)),
            "items": len(item_ids),
            "interactions": len(log),
            "train_interactions": int(train_mask.sum()),
            "test_interactions": len(test_rows),
            "evaluated_events": n_eval,
            "sampled_from": f"{len(test_rows)} later interactions (seeded uniform sample, max_events={config.max_events})",
            "stream_path": "FeatureUpdater with in-memory stores (adapters' semantics), fed Kinesis-shaped records",
            "online_path": "Recommender (ModelProvider + RequestReader + TFLite ranker), no content index",
            "exclusion": f"exclude=<history> in the request (<= {MAX_EXCLUDE} ids), else k={MAX_K} filtered after",
            "warmup_seconds": round(product.warm_seconds, 2),
            "replay_seconds": round(replay_s, 2),
            "seconds": round(time.perf_counter() - t_start, 2),
        },
    }
