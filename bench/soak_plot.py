"""Plot bench/soak.rs samples: soak_plot.py SAMPLES.csv OUT.png [VERDICT.txt]."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    verdict = open(sys.argv[3]).read().rstrip() if len(sys.argv) > 3 else ""
    with open(src) as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    t = [r["t_s"] for r in rows]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    ax[0][0].plot(t, [r["rss_kib"] / 1024 for r in rows])
    ax[0][0].set_title("RSS (MiB)")
    ax[0][1].plot(t, [r["fds"] for r in rows], label="open fds")
    ax[0][1].plot(t, [r["threads"] for r in rows], label="threads")
    ax[0][1].legend()
    ax[0][1].set_title("open fds, threads")
    ax[1][0].plot(t, [r["tasks"] for r in rows])
    ax[1][0].set_title("tokio tasks alive")
    ax[1][1].plot(t, [r["api_writes"] for r in rows])
    ax[1][1].set_title("API writes (node status, cumulative)")
    for a in ax[1]:
        a.set_xlabel("seconds")
    for row in ax:
        for a in row:
            a.set_ylim(bottom=0)
            a.grid(alpha=0.3)
    last = verdict.splitlines()[0:6]
    fig.suptitle("pullprobe agent soak — " + (verdict.split("verdict: ")[-1].split("\n")[0] if verdict else ""))
    if last:
        fig.text(0.01, 0.005, "\n".join(last), fontsize=7, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(dst, dpi=100)


if __name__ == "__main__":
    main()
