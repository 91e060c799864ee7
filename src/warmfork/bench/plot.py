"""PNG of start latency against parent memory (needs matplotlib)."""

from .methods import RAW

__all__ = ["plot"]


def plot(rows, path):
    """Write a PNG of p50 start latency (p90 whiskers) vs parent RSS."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: "
                         "pip install 'warmfork[plot]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    series = {}
    for r in rows:
        if not (r["figure"] == "start" or r["figure"].startswith("start@")):
            continue
        label = "raw os.fork()+1 byte" if r["method"] == RAW else r["method"]
        s = r["stats"]
        series.setdefault(label, []).append(
            (r["rss_kb"] / 1024, s["p50"] / 1e6, (s["p90"] - s["p50"]) / 1e6))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in series.items():
        pts.sort()
        xs, ys, err = zip(*pts)
        ax.errorbar(xs, ys, yerr=[[0] * len(err), err], marker="o",
                    capsize=3, label=label)
    ax.set_xlabel("parent resident memory (MB)")
    ax.set_ylabel("start latency p50 (ms, whisker to p90)")
    ax.set_yscale("log")
    ax.set_title("Start latency against parent memory")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
