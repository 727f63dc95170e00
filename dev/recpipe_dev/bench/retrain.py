"""`recpipe bench retrain`: wall time and peak memory of every retrain stage, and publish rate.

Sizes: `ml` (the MovieLens directory --data) and generated shops of `1M` / `10M` interactions
(recpipe_dev.synthetic). Each size runs in its own subprocess so its peak RSS
(VmHWM of /proc/self/status: right for numpy/TensorFlow, unlike tracemalloc, and unlike
ru_maxrss not inherited from the parent across fork+exec) is its own; the figure
after each stage is the process's high-water mark so far, and `rss_growth_mib` how much that
stage raised it.

Publish: the trained candidate lists are written into a throw-away redis-server with
RedisCandidateCache (vectorised encoding + MSET chunks), once in one process and once split
into shards over `--publish-workers` processes, the way the state machine's Map state runs
shards in parallel; lists/s counts complete lists per wall second including the final commit.

Big shops subsample the ranker's history replay (`max_replay_users`) and the holdout users
(`max_eval_users`); the report says so under `params`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    "ml": {},
    "1M": {"n_users": 20_000, "n_items": 5_000, "n_interactions": 1_000_000},
    "10M": {"n_users": 200_000, "n_items": 20_000, "n_interactions": 10_000_000},
}
#: Replay/eval subsampling for the generated shops (the MovieLens run replays everything).
BIG_PARAMS = {"max_replay_users": 4000, "max_eval_users": 2000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="ml,1M,10M", help="comma list of ml, 1M, 10M")
    parser.add_argument(
        "--data", default="../shared/datasets/ml-latest-small", help="MovieLens directory for `ml`"
    )
    parser.add_argument("--publish-workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="catalogue size of the generated shops (default: 5,000 at 1M, 20,000 at 10M)",
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument(
        "--compare-cf",
        action="store_true",
        help="also compare ALS / BPR / item-item CF on the MovieLens time-based holdout",
    )
    parser.add_argument(
        "--publish-lists",
        type=int,
        default=0,
        help="also time publishing this many generated 200-item lists (no training)",
    )
    parser.add_argument(
        "--candidate-policies",
        default="",
        help="also train on MovieLens once per candidate policy, e.g. "
        "'cf=200/nbr=20/sess=5,cf=200/nbr=50/sess=5' (cf list length, neighbours per session item, "
        "session items; cf > 200 also publishes that many), reporting candidate coverage, holdout "
        "ndcg@10 and time",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)


def _peak_mib() -> float:
    from recpipe.training.pipeline import peak_rss_mib

    return peak_rss_mib()


#: The lists being published, inherited by forked shard workers (a Lambda loads them once per
#: warm container; that load is not part of the write rate).
_SHARED: Any = None


def _publish_shard(args: tuple[str, str, str, int, int]) -> int:
    import redis
    from recpipe.adapters.redis_candidates import RedisCandidateCache
    from recpipe.redis_keys import KeyLayout

    url, _path, version, lo, hi = args
    return RedisCandidateCache(redis.Redis.from_url(url), KeyLayout("bench")).write_lists(
        version, _SHARED.encoded(lo, hi)
    )


def _publish(result: Any, workers: int) -> dict[str, Any]:
    import redis
    from recpipe.adapters.redis_candidates import RedisCandidateCache
    from recpipe.redis_keys import KeyLayout

    from recpipe_dev.local.redis_server import RedisServer

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        client = redis.Redis.from_url(server.url)
        cache = RedisCandidateCache(client, KeyLayout("bench"))
        t0 = time.perf_counter()
        n = cache.publish("single", result.candidates.encoded(), {"bench": True})
        dt = time.perf_counter() - t0
        out["single_process"] = {"lists": n, "wall_s": round(dt, 3), "lists_per_s": round(n / dt, 1)}
        client.flushall()
        total = len(result.candidates)
        step = -(-total // workers)  # one shard per worker, like a Map over shards
        shards = [
            (server.url, str(result.candidates_path), "sharded", lo, min(lo + step, total))
            for lo in range(0, total, step)
        ]
        global _SHARED  # noqa: PLW0603 - handed to forked workers
        _SHARED = result.candidates
        t0 = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            written = sum(pool.map(_publish_shard, shards))
        cache.commit("sharded", {"bench": True})
        dt = time.perf_counter() - t0
        out[f"{workers}_workers"] = {
            "lists": written,
            "shards": len(shards),
            "wall_s": round(dt, 3),
            "lists_per_s": round(written / dt, 1),
        }
        info = client.info("memory")
        out["redis_used_memory_mib"] = round(info["used_memory"] / 2**20, 1)
        out["avg_list_bytes"] = round(info["used_memory"] / max(written, 1), 1)
    return out


def child(size: str, data: str, workers: int, out_path: Path, n_items: int | None = None) -> None:
    """One size, in this (fresh) process; `n_items` overrides a generated shop's catalogue size."""
    stages: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    base = _peak_mib()
    from recpipe.training.pipeline import TrainParams, train_bundle

    if size == "ml":
        from recpipe.training.movielens import load_movielens

        log, items, _ = load_movielens(Path(data))
        params = TrainParams()
    else:
        from recpipe_dev.synthetic import generate

        shape = dict(SIZES[size])
        if n_items is not None:
            shape["n_items"] = n_items
        log, items = generate(seed=1, **shape)
        params = TrainParams(**BIG_PARAMS)  # type: ignore[arg-type]
    stages["load"] = {"wall_s": round(time.perf_counter() - t0, 3), "peak_rss_mib": round(_peak_mib(), 1)}
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        result = train_bundle(log, items, Path(tmp), version=f"bench-{size}", params=params)
        train_s = time.perf_counter() - t1
        stages.update(result.stages)
        t2 = time.perf_counter()
        publish = _publish(result, workers)
        stages["publish"] = {
            "wall_s": round(time.perf_counter() - t2, 3),
            "peak_rss_mib": round(_peak_mib(), 1),
        }
        bundle_bytes = sum(f.stat().st_size for f in result.bundle_dir.iterdir())
    previous = base
    for s in stages.values():
        s["rss_growth_mib"] = round(max(0.0, s["peak_rss_mib"] - previous), 1)
        previous = max(previous, s["peak_rss_mib"])
    report = {
        "size": size,
        "interactions": len(log),
        "users": len(log.user_vocab),
        "items": len(items),
        "params": {
            k: v
            for k, v in params.to_dict().items()
            if k in ("factors", "iterations", "top_n", "max_examples", "max_replay_users", "max_eval_users")
        },
        "stages": stages,
        "train_wall_s": round(train_s, 2),
        "retrain_wall_s": round(stages["load"]["wall_s"] + train_s, 2),
        "peak_rss_mib": round(_peak_mib(), 1),
        "publish": publish,
        "bundle_mib": round(bundle_bytes / 2**20, 2),
        "metrics": {
            k: result.metrics[k]
            for k in (
                "ndcg@10",
                "cf_ndcg@10",
                "hit_rate@10",
                "cf_hit_rate@10",
                "ranked_minus_cf_ndcg@10",
                "ranked_minus_cf_ndcg@10_se",
                # "cf_order" when the learned ranker lost to the CF order and was not shipped
                "ranker_order",
                "learned_ranker_minus_cf_ndcg@10",
                "learned_ranker_minus_cf_ndcg@10_se",
                # the fixed blend's order on the same holdout users (what fusion replaced)
                "cf_blend_ndcg@10",
                "ranked_minus_cf_blend_ndcg@10",
                "ranked_minus_cf_blend_ndcg@10_se",
                "fusion_adopted",
                "fusion_folds",
                "fusion_validation_ndcg@10",
                "fusion_validation_blend_ndcg@10",
                # the retrain's own choice of EASE's lambda, ALS's ridge and the blend's weights
                "linear_regularization",
                "als_regularization",
                "linear_weight",
                "sequential_weight",
                "als_weight",
                "blend_tuning_gain_ndcg@10",
                "blend_tuning_gain_se",
                "eval_users",
                "ranker_examples",
            )
            if k in result.metrics
        },
    }
    out_path.write_text(json.dumps(report, indent=2))


def _print(r: dict[str, Any]) -> None:
    print(f"\n== {r['size']}: {r['interactions']:,} interactions, {r['users']:,} users, {r['items']:,} items")
    print(f"{'stage':<18}{'wall_s':>10}{'peak_rss_mib':>14}{'rss_growth_mib':>16}")
    for name, s in r["stages"].items():
        print(f"{name:<18}{s['wall_s']:>10.2f}{s['peak_rss_mib']:>14.1f}{s['rss_growth_mib']:>16.1f}")
    print(
        f"retrain (load+train) {r['retrain_wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, bundle {r['bundle_mib']} MiB"
    )
    for mode, p in r["publish"].items():
        if isinstance(p, dict):
            print(
                f"publish {mode}: {p['lists']:,} lists in {p['wall_s']:.2f} s = {p['lists_per_s']:,.0f} lists/s"
            )
    print("metrics: " + ", ".join(f"{k}={v}" for k, v in r["metrics"].items()))


def compare_cf(data: str, k: int = 10) -> dict[str, Any]:
    """CF alone (no ranker) on the time-based holdout: what `implicit` model to generate with.

    Fit on events before the 90% time quantile, score users known before it on the items they
    interacted with after it, excluding what they had already consumed."""
    import numpy as np
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.nearest_neighbours import CosineRecommender
    from recpipe.ranking_metrics import hit_rate_at_k, ndcg_at_k
    from recpipe.training.cf import CFModel, confidence_matrix, fit_als, top_n
    from recpipe.training.movielens import load_movielens
    from recpipe.training.pipeline import TrainParams
    from threadpoolctl import threadpool_limits

    log, _, _ = load_movielens(Path(data))
    log = log.sorted_by_time()
    p = TrainParams()
    t2 = float(np.quantile(log.ts, p.holdout_start))
    before = log.ts < t2
    train = log.take(before)
    n_users, n_items = len(log.user_vocab), len(log.item_vocab)
    relevant: dict[int, set[int]] = {}
    for u, i in zip(log.users[~before].tolist(), log.items[~before].tolist(), strict=True):
        relevant.setdefault(u, set()).add(i)
    known = set(train.users.tolist())
    users = np.asarray(sorted(u for u in relevant if u in known), np.int32)
    ui = confidence_matrix(train, n_users, n_items)

    def score(best: Any) -> dict[str, float]:
        lists = {u: [i for i in best[r].tolist() if i >= 0][:k] for r, u in enumerate(users.tolist())}
        n = len(users)
        return {
            f"ndcg@{k}": round(sum(ndcg_at_k(lists[u], relevant[u], k) for u in lists) / n, 5),
            f"hit_rate@{k}": round(sum(hit_rate_at_k(lists[u], relevant[u], k) for u in lists) / n, 5),
        }

    out: dict[str, Any] = {"eval_users": len(users), "holdout_start": t2}
    t0 = time.perf_counter()
    als = fit_als(train, n_users, n_items, factors=p.factors, iterations=p.iterations,
                  regularization=p.regularization, alpha=p.alpha, seed=p.seed)  # fmt: skip
    out["als"] = {**score(top_n(als, users, k)[0]), "fit_s": round(time.perf_counter() - t0, 2)}
    with threadpool_limits(1, "blas"):
        t0 = time.perf_counter()
        bpr = BayesianPersonalizedRanking(factors=p.factors, iterations=100, random_state=p.seed)
        bpr.fit((ui > 0).astype(np.float32).tocsr(), show_progress=False)
        # BPR keeps a bias term in its last factor: score with its own factors, same exclusion
        model = CFModel(
            np.asarray(bpr.user_factors, np.float32), np.asarray(bpr.item_factors, np.float32), ui
        )
        out["bpr"] = {**score(top_n(model, users, k)[0]), "fit_s": round(time.perf_counter() - t0, 2)}
        t0 = time.perf_counter()
        knn = CosineRecommender(K=50)
        knn.fit(ui, show_progress=False)
        ids, _ = knn.recommend(users, ui[users], N=k, filter_already_liked_items=True)
        out["item_item_cosine"] = {**score(np.asarray(ids)), "fit_s": round(time.perf_counter() - t0, 2)}
    return out


def publish_only(n_lists: int, workers: int, top_n: int = 200, n_items: int = 20_000) -> dict[str, Any]:
    """Publish throughput alone, on generated lists shaped like training's (ids i0000000)."""
    import numpy as np
    from recpipe.training.candidates import CandidateLists

    rng = np.random.default_rng(0)
    items = rng.integers(0, n_items, (n_lists, top_n)).astype(np.int32)
    scores = np.sort(rng.standard_normal((n_lists, top_n)).astype(np.float32) * 0.3, axis=1)[:, ::-1]
    lists = CandidateLists(
        [f"u{u:07d}" for u in range(n_lists)],
        items,
        np.ascontiguousarray(scores),
        [f"i{i:07d}" for i in range(n_items)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidates.npz"
        lists.save(path)

        class _Result:
            candidates = lists
            candidates_path = path

        return {"lists": n_lists, "top_n": top_n, **_publish(_Result(), workers)}


def compare_policies(data: str, specs: str) -> dict[str, Any]:
    """train_bundle on MovieLens per candidate policy: coverage vs quality vs time."""
    from recpipe.training.history import CandidatePolicy
    from recpipe.training.movielens import load_movielens
    from recpipe.training.pipeline import TrainParams, train_bundle, with_overrides

    log, items, _ = load_movielens(Path(data))
    out: dict[str, Any] = {}
    keys = {"cf": "cf", "nbr": "neighbours_per_item", "sess": "session_items"}
    for spec in [s.strip() for s in specs.split(",") if s.strip()]:
        values = {keys[k]: int(v) for k, v in (part.split("=") for part in spec.split("/"))}
        base = TrainParams()
        policy = CandidatePolicy(**{**{f: getattr(base.policy, f) for f in keys.values()}, **values})
        params = with_overrides(
            base,
            policy=policy,
            top_n=max(base.top_n, policy.cf),
            neighbours=max(base.neighbours, policy.neighbours_per_item),
        )
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = train_bundle(log, items, Path(tmp), version="policy", params=params)
            wall = time.perf_counter() - t0
        m = result.metrics
        out[spec] = {
            "ranker_candidate_recall": m["ranker_candidate_recall"],
            "holdout_candidate_recall": m.get("candidate_recall"),
            "ndcg@10": m.get("ndcg@10"),
            "hit_rate@10": m.get("hit_rate@10"),
            "cf_ndcg@10": m.get("cf_ndcg@10"),
            "eval_users": m.get("eval_users"),
            "mean_candidates": m.get("mean_candidates"),
            "train_wall_s": round(wall, 2),
            "replay_s": round(result.stages["replay"]["wall_s"], 2),
            "evaluate_s": round(result.stages["evaluate"]["wall_s"], 2),
        }
        print(f"policy {spec}: {out[spec]}", flush=True)
    return out


def run(args: argparse.Namespace) -> int:
    publish: dict[str, Any] | None = None
    if args.publish_lists and not args.child:
        publish = publish_only(args.publish_lists, args.publish_workers)
        for mode, p in publish.items():
            if isinstance(p, dict):
                print(
                    f"publish-only {mode}: {p['lists']:,} lists in {p['wall_s']:.2f} s = {p['lists_per_s']:,.0f} lists/s"
                )
    if args.compare_cf:
        cmp = compare_cf(args.data)
        print("CF alone on the MovieLens time-based holdout:")
        for name, m in cmp.items():
            print(f"  {name}: {m}")
    policies = compare_policies(args.data, args.candidate_policies) if args.candidate_policies else None
    if args.child:
        child(args.child, args.data, args.publish_workers, args.child_out, args.items)
        return 0
    reports = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()] if args.sizes != "none" else []:
        if size not in SIZES:
            print(f"unknown size {size!r} (choose from {', '.join(SIZES)})", file=sys.stderr)
            return 2
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            # A bare interpreter (not the CLI, which imports every benchmark module) so the
            # child's peak RSS is the retrain's own.
            code = (
                "import sys; from recpipe_dev.bench.retrain import child; child(sys.argv[1], sys.argv[2], "
                "int(sys.argv[3]), __import__('pathlib').Path(sys.argv[4]), int(sys.argv[5]) or None)"
            )
            items = str(args.items or 0)
            cmd = [sys.executable, "-c", code, size, args.data, str(args.publish_workers), out.name, items]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, check=False)
            if proc.returncode != 0:
                print(f"size {size} failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            report = json.loads(Path(out.name).read_text())
            report["process_wall_s"] = round(time.perf_counter() - t0, 2)
        _print(report)
        reports.append(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "benchmark": "retrain",
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
            "targets": {
                "ml_retrain_wall_s_max": 60,
                "ml_peak_rss_mib_max": 2048,
                "publish_lists_per_s_min": 50_000,
            },
            "by_size": {r["size"]: r for r in reports},
        }
        if args.compare_cf:
            body["cf_methods_ml_holdout"] = cmp
        if publish is not None:
            body["publish_only"] = publish
        if policies is not None:
            body["candidate_policies_ml_holdout"] = policies
        args.json.write_text(json.dumps(body, indent=2))
        print(f"\nreport written to {args.json}")
    return 0
