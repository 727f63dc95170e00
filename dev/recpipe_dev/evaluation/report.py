"""Evaluation outputs: the JSON report, a Markdown table and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Columns shown in the Markdown table, per protocol (every number is in the JSON anyway).
TABLE_COLUMNS: dict[str, Sequence[str]] = {
    "random": ("ndcg@{k}", "map", "map@{k}", "precision@{k}", "recall@{k}", "coverage@{k}"),
    "stream": ("hit_rate@{k}", "ndcg@{k}", "mrr@{k}", "coverage@{k}"),
}
LABELS = {
    "popularity": "popularity",
    "trending": "popularity (trending, live)",
    "item_knn": "item-kNN (implicit)",
    "bpr": "BPR (implicit)",
    "als": "ALS (implicit)",
    "ease": "EASE",
    "pipeline": "full ranked pipeline",
    "batch_only": "batch model alone (CF candidates by CF score, popularity top-up)",
    "pipeline_without_live": "online path without live signals (no session/features/trending)",
    "project_cf": "project_cf: the shipped candidates in CF order (EASE, time-local EASE and ALS, learned fusion)",
    "project_cf_blend": "project_cf_blend: the same candidates in the fixed blend's order (retrain with the fusion off)",
    "project_pipeline": "project_pipeline: shipped bundle through the real Recommender (returning user)",
    "project_pipeline_live_session": "project_pipeline, asked 1 s after the last rating (live session)",
}

PROTOCOL_LABELS: dict[str, dict[str, str]] = {}
PROTOCOL_SHORT_LABELS: dict[str, dict[str, str]] = {}
#: Short names for plot axes.
SHORT_LABELS = {
    "popularity": "popularity",
    "trending": "trending\n(live)",
    "item_knn": "item-kNN",
    "bpr": "BPR",
    "als": "ALS",
    "ease": "EASE",
    "pipeline": "full\npipeline",
    "batch_only": "batch model\nalone",
    "pipeline_without_live": "online path,\nno live signals",
    "project_cf": "project_cf",
    "project_cf_blend": "project_cf\n(blend order)",
    "project_pipeline": "project_pipeline",
    "project_pipeline_live_session": "project_pipeline\n(live session)",
}


def write_json(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def markdown_table(report: Mapping[str, Any], methods: Mapping[str, Any] | None = None) -> str:
    k = int(report["k"])
    cols = [c.format(k=k) for c in TABLE_COLUMNS[str(report["protocol"])]]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    rows = dict(methods if methods is not None else report["methods"])
    # the product's rows lead, then the baselines
    ordered = sorted(rows, key=lambda n: not n.startswith("project_"))
    for name in ordered:
        metrics = rows[name]
        cells = [_cell(metrics, c, with_se=True) for c in cols]
        label = PROTOCOL_LABELS.get(str(report["protocol"]), {}).get(name) or LABELS.get(name, name)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(metrics: Mapping[str, Any], col: str, *, with_se: bool) -> str:
    if col not in metrics:
        return "-"
    se = metrics.get(f"{col}_se")
    if with_se and se:
        return f"{metrics[col]:.4f} ± {se:.4f}"
    return f"{metrics[col]:.4f}"


def write_markdown(report: Mapping[str, Any], path: Path) -> None:
    cfg = report.get("config", {})
    head = [f"# Offline evaluation: {report['protocol']} protocol ({report.get('dataset', '')})", ""]
    details = {
        key: cfg[key]
        for key in (
            "split",
            "relevance",
            "users",
            "items",
            "evaluated_events",
            "sampled_from",
            "seed",
            "seconds",
        )
        if key in cfg
    }
    for key, value in details.items():
        head.append(f"- {key}: {value}")
    extra = report.get("candidate_stage")
    if extra:
        head.append("- candidate stage: " + ", ".join(f"{m}={v:.4f}" for m, v in extra.items()))
    for key, value in (report.get("ratios") or {}).items():
        head.append(f"- {key}: {value}")
    for key, value in report.items():
        if key.startswith("paired_"):  # per-user differences on the same users, +- 1 SE
            for name, d in value.items():
                head.append(f"- {key} {name}: {d['diff']:+.4f} ± {d['se']:.4f} ({d['users']} users)")
    body = markdown_table(report)
    for segment, methods in (report.get("by_segment") or {}).items():
        n = int(next(iter(methods.values())).get("n_evaluated", 0)) if methods else 0
        body += f"\n{segment.replace('_', ' ')} ({n} events):\n\n" + markdown_table(report, methods)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head) + "\n\n" + body)


def plot_quality(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(report["k"])
    cols = [c.format(k=k) for c in TABLE_COLUMNS[str(report["protocol"])] if not c.startswith("coverage")]
    names = list(report["methods"])
    fig, ax = plt.subplots(figsize=(max(7.0, 1.4 * len(names)), 4.2))
    width = 0.8 / len(cols)
    for j, col in enumerate(cols):
        values = [float(report["methods"][n].get(col, 0.0)) for n in names]
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width, label=col)
        ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
    ax.set_xticks(range(len(names)))
    short = {**SHORT_LABELS, **PROTOCOL_SHORT_LABELS.get(str(report["protocol"]), {})}
    ax.set_xticklabels([short.get(n, n) for n in names], fontsize=8)
    ax.set_ylabel("score")
    ax.set_title(f"Quality by method - {report['protocol']} protocol, {report.get('dataset', '')}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(serving: Mapping[str, Any], path: Path) -> bool:
    """Latency distribution per candidate count from `recpipe bench serving --json`.
    Accepts {"samples_ms": {count: [...]}} or per-group entries carrying "samples_ms"."""
    samples = _latency_samples(serving)
    if not samples:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, values in samples.items():
        arr = np.sort(np.asarray(values, dtype=float))
        if len(arr) == 0:
            continue
        ax.plot(
            arr,
            np.arange(1, len(arr) + 1) / len(arr),
            label=f"{label} candidates "
            f"(p50 {np.percentile(arr, 50):.1f}, p99 {np.percentile(arr, 99):.1f} ms)",
        )
    # Log scale: the body (a few ms) and the rare slow outliers both stay readable.
    ax.set_xscale("log")
    ax.axvline(50.0, color="grey", linestyle="--", linewidth=1)
    ax.text(50.0, 0.05, " 50 ms", color="grey", fontsize=7)
    ax.set_xlabel("request latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    setup = serving.get("setup")
    detail = ""
    if isinstance(setup, Mapping):
        detail = "\n" + ", ".join(
            f"{label} {setup[key]}"
            for key, label in (
                ("catalogue_items", "items"),
                ("requests", "requests/count"),
                ("machine_cpus", "cpus"),
                ("request_budget_ms", "budget ms"),
            )
            if key in setup
        )
    ax.set_title("Online path latency (recpipe bench serving)" + detail, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _latency_samples(serving: Mapping[str, Any]) -> dict[str, list[float]]:
    raw = serving.get("samples_ms")
    if isinstance(raw, Mapping):
        return {str(key): list(v) for key, v in raw.items() if isinstance(v, list)}
    found: dict[str, list[float]] = {}
    for group_key in ("by_candidates", "candidates", "groups"):
        groups = serving.get(group_key)
        if isinstance(groups, Mapping):
            for key, entry in groups.items():
                if isinstance(entry, Mapping) and isinstance(entry.get("samples_ms"), list):
                    found[str(key)] = list(entry["samples_ms"])
        elif isinstance(groups, list):
            for entry in groups:
                if isinstance(entry, Mapping) and isinstance(entry.get("samples_ms"), list):
                    found[str(entry.get("candidates", len(found)))] = list(entry["samples_ms"])
    return found
