"""The after-action record's chart: deliveries handed over and confirmed delivered over time,
per channel, drawn with matplotlib (no display: the Agg backend) as PNG bytes."""

from __future__ import annotations

import io


def deliveries_chart(series: dict[str, dict[str, list[float]]], title: str) -> bytes:
    """A PNG of cumulative deliveries per channel against seconds after the first approval
    (`figures.deliveries_over_time`)."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: never look for a display
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        for channel, kinds in sorted(series.items()):
            for kind, style in (("sent", "-"), ("delivered", "--")):
                times = kinds.get(kind, [])
                if times:  # from (0, 0): a handful of messages still draws a line
                    ax.step([0.0, *times], range(len(times) + 1), style, where="post",
                            marker="o" if len(times) <= 50 else None, markersize=3,
                            label=f"{channel} {'handed over' if kind == 'sent' else kind}")
        ax.set_xlabel("seconds after the first approval")
        ax.set_ylabel("messages (cumulative)")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
        else:
            ax.text(0.5, 0.5, "no deliveries", ha="center", va="center",
                    transform=ax.transAxes)
        ax.grid(True, alpha=0.3)
        out = io.BytesIO()
        fig.savefig(out, format="png", bbox_inches="tight")
        return out.getvalue()
    finally:
        plt.close(fig)

