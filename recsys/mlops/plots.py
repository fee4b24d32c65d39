"""Every figure of the project (matplotlib, Agg backend: no display needed).

Functions take plain values (lists, dicts, pandas) and a file path, write a PNG, and return
the path; jobs log the file as an artifact.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

# ---------------------------------------------------------------- als_search


def search_landscape(table, objective: str, direction: str, path: str, title: str = "") -> str:
    """Trials in the rank x reg_param plane (log axes), coloured by the objective; failed trials
    as grey crosses; the best trial circled. ``table``: ``search.trials_table`` output."""
    col = f"val_{objective}"
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ok = table[(table["status"] == "ok") & table[col].notna()] if col in table else table.iloc[0:0]
    failed = table[table["status"] != "ok"]
    if len(ok):
        cmap = "viridis_r" if direction == "min" else "viridis"
        points = ax.scatter(ok["reg_param"], ok["rank"], c=ok[col], cmap=cmap, s=60, edgecolors="k")
        fig.colorbar(points, ax=ax, label=f"validation {objective}")
        best = ok.loc[ok[col].idxmin() if direction == "min" else ok[col].idxmax()]
        ax.scatter([best["reg_param"]], [best["rank"]], s=260, facecolors="none", edgecolors="red",
                   linewidths=2, label="best")
    if len(failed) and "reg_param" in failed:
        ax.scatter(failed["reg_param"], failed["rank"], marker="x", c="grey", s=60, label="failed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("reg_param")
    ax.set_ylabel("rank")
    ax.set_title(title or f"ALS search landscape ({objective})")
    if len(ok) or len(failed):
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def objective_per_trial(table, objective: str, direction: str, baseline: float | None,
                        baseline_label: str, path: str) -> str:
    """Objective of each trial in order, the best so far, and a reference line (a baseline)."""
    col = f"val_{objective}"
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if col in table:
        values = table[col].where(table["status"] == "ok")
        ax.plot(table["trial"], values, "o", label="trial")
        best = values.cummin() if direction == "min" else values.cummax()
        ax.step(table["trial"], best, where="post", label="best so far")
    if baseline is not None:
        ax.axhline(baseline, color="red", linestyle="--", label=baseline_label)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {objective} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax.set_title(f"{objective} per trial")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- baseline


def metrics_bar(metrics: dict, path: str, title: str = "") -> str:
    """Horizontal bars, one per metric (name -> value), value printed at the bar's end."""
    names = list(metrics)
    values = [float(metrics[n]) for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(names) + 1.2))
    bars = ax.barh(names, values, color="tab:blue")
    ax.invert_yaxis()
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.4f}", va="center")
    ax.set_xlim(0, max([v for v in values if v == v] + [1.0]) * 1.2)
    ax.set_title(title or "metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main


def champions_vs_baselines(panels: list, path: str, title: str = "") -> str:
    """One small bar chart per panel, side by side, each value printed on its bar.

    ``panels``: dicts with ``title``, ``better`` (``"higher"`` or ``"lower"``, shown under the
    title) and ``bars`` (label -> value; the first label is the one judged, drawn in blue, the
    others in grey; a ``None`` value is drawn as "none")."""
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.4 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        labels = list(panel["bars"])
        values = [panel["bars"][label] for label in labels]
        heights = [0.0 if v is None else float(v) for v in values]
        colors = ["tab:blue"] + ["tab:grey"] * (len(labels) - 1)
        bars = ax.bar(labels, heights, color=colors)
        top = max([abs(h) for h in heights] + [1e-9])
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                    "none" if value is None else f"{float(value):.4f}", ha="center", va="bottom")
        ax.set_ylim(min(0.0, min(heights) * 1.2), top * 1.2)
        ax.set_title(f"{panel['title']}\n({panel.get('better', 'higher')} is better)", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title or "champions against their baselines (test split); twins against random pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- twins


def twins_pearson_hist(twins: list, others: list, path: str, title: str = "") -> str:
    """Histograms of the twins' and random pairs' Pearson correlations on common bins; pairs
    without a correlation (``None``) are left out and counted in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    bins = [i / 10 for i in range(-10, 11)]
    for values, label, color in ((twins, "twins", "tab:blue"), (others, "random pairs", "tab:orange")):
        defined = [v for v in values if v is not None]
        ax.hist(defined, bins=bins, alpha=0.55, color=color,
                label=f"{label} ({len(defined)} defined, {len(values) - len(defined)} undefined)")
        if defined:
            ax.axvline(sum(defined) / len(defined), color=color, linestyle="--")
    ax.set_xlabel("Pearson correlation of ratings on co-rated movies")
    ax.set_ylabel("pairs")
    ax.set_title(title or "twins vs random pairs (dashed: means)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def twins_jaccard(jaccards: list, path: str, title: str = "") -> str:
    """Exact Jaccard similarity of the top pairs by rank."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(range(1, len(jaccards) + 1), jaccards, "o-", markersize=3)
    ax.set_xlabel("rank")
    ax.set_ylabel("exact Jaccard similarity")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "top pairs by exact Jaccard")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- benchmarks (experiments/benchmark.py)


def benchmark_times(rows: list, path: str, title: str = "") -> str:
    """Wall time against number of ratings, log-log, one line per stage.

    ``rows``: dicts with ``stage``, ``ratings`` and ``seconds`` (failed stages left out)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for stage in sorted({r["stage"] for r in rows}):
        points = sorted((float(r["ratings"]), float(r["seconds"])) for r in rows if r["stage"] == stage)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=stage)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.set_xlabel("ratings")
    ax.set_ylabel("wall time (s)")
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend()
    ax.set_title(title or "recsys stages: wall time against data size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
