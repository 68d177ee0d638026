"""Turns a pytest-benchmark JSON of `tests/benchmarks/` into a Markdown table, the speed targets of
issue 6 as ratios, and a plot of users/s vs N per sampler.

    python -m benchmark.bench_report results/bench/cpu.json      # -> results/bench/cpu.md, cpu.png

Times are each case's fastest round (`min`): on a shared machine the least disturbed round is the
best estimate of the cost; the median is printed beside it. The documented CPU command times CPU
seconds of the process (`--benchmark-timer=time.process_time`, one torch thread), see
`benchmark.speed`.

RecBole's times come from the committed output of the peer benchmark (`python -m benchmark.peer
recbole` -> results/bench/peer-recbole.json, its best rounds); each line names that file, its date
and CPU, since they were measured in another run than the JSON reported on. Without that file the
RecBole ratios are left out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.peer import OUT as PEER_JSON
from benchmark.peer import load_recbole_reference

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

LOOP_SAMPLERS = ("ancestral", "strided", "diffurec")


def frame(bench_json: dict) -> pd.DataFrame:
    rows = []
    for b in bench_json["benchmarks"]:
        info, stats = b.get("extra_info", {}), b["stats"]
        row = {"test": b["name"], "kind": b["name"].split("[")[0], "model": info.get("model", ""), "sampler": info.get("sampler", ""), "n": info.get("n")}
        row.update(users=info.get("users"), rounds=stats["rounds"], min_s=stats["min"], median_s=stats["median"], device=info.get("device", ""), threads=info.get("threads"))
        row["users/s"] = info["users"] / stats["min"] if info.get("users") else None
        if "epoch_batches" in info:  # training: extrapolate one epoch from the timed batches
            row["seq/s"] = info["sequences"] / stats["min"]
            row["targets/s"] = info["targets"] / stats["min"]
            row["epoch_s (extrapolated)"] = stats["min"] * info["epoch_batches"] / info["batches"]
        rows.append(row)
    return pd.DataFrame(rows)


def _min_s(df: pd.DataFrame, **where) -> float | None:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return float(sel["min_s"].min()) if len(sel) else None


def targets(df: pd.DataFrame, recbole: dict | None = None) -> list[str]:
    """The issue's speed targets, each as a measured ratio with its verdict; the RecBole ratios only
    with `recbole` (`benchmark.peer.load_recbole_reference`)."""
    lines = []
    for batch in sorted(df[df["kind"].isin(["test_sasrec_scoring", "test_diffrec_denoiser_call"])]["users"].unique()):
        b = int(batch)
        call = _min_s(df, sampler="denoiser-call", users=b)
        for sampler in ("ancestral", "strided"):
            sel = df[(df["sampler"] == sampler) & (df["users"] == b)]
            if call is None or sel.empty:
                continue
            n = int(sel["n"].max())
            ratio = _min_s(df, sampler=sampler, users=b, n=n) / (n * call)
            lines.append(f"- {sampler}, batch {b}: time(N={n}) / ({n} x one denoiser call) = {ratio:.3f} (target <= 1.1: {'met' if ratio <= 1.1 else 'MISSED'})")
        sas, avg = _min_s(df, kind="test_sasrec_scoring", users=b), df[(df["sampler"] == "average") & (df["users"] == b)]
        if sas is not None and not avg.empty:
            ratio = float(avg["min_s"].median()) / sas
            lines.append(f"- average (default m), batch {b}: time / SASRec scoring = {ratio:.2f} (target <= 2: {'met' if ratio <= 2 else 'MISSED'})")
    for _, r in df[df["kind"] == "test_full_ranking_evaluation"].iterrows():
        line = f"- evaluation of all {int(r['users'])} beauty test users, {r['model']}: {r['min_s']:.2f} s, {r['users/s']:.0f} users/s"
        if recbole:
            rb = recbole["eval_s"]
            line += f"; speed-up {rb / r['min_s']:.2f}x over RecBole's {rb:.1f} s ({recbole['source']}) (target >= 3x: {'met' if r['min_s'] * 3 <= rb else 'MISSED'})"
        lines.append(line)
    training = df[df["kind"] == "test_training_throughput"]
    ce_epoch = training.loc[training.model == "sasrec-ce", "epoch_s (extrapolated)"]
    for _, r in training.iterrows():
        epoch = r["epoch_s (extrapolated)"]
        line = f"- training {r['model']}: {r['seq/s']:.0f} sequences/s, {r['targets/s']:.0f} targets/s, epoch ~{epoch:.1f} s (extrapolated)"
        if r["model"] != "sasrec-ce" and len(ce_epoch):
            line += f"; {epoch / ce_epoch.iloc[0]:.2f}x SASRec-CE's epoch"
        if r["model"] == "sasrec-ce" and recbole:
            rb = recbole["epoch_s"]
            line += f"; speed-up {rb / epoch:.2f}x over RecBole's {rb:.0f} s ({recbole['source']}) (target >= 3x: {'met' if epoch * 3 <= rb else 'MISSED'})"
        lines.append(line)
    if not recbole:
        lines.append(f"- RecBole ratios left out: no {PEER_JSON.name} (run `python -m benchmark.peer recbole`)")
    return lines


def plot(df: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {256: "-", 1024: "--"}
    colors = {"ancestral": "C0", "strided": "C1", "average": "C2", "diffurec": "C3"}
    for (sampler, users), g in df[df["sampler"].isin(colors)].groupby(["sampler", "users"]):
        g = g.sort_values("n")
        ax.plot(g["n"], g["users/s"], styles.get(int(users), ":"), marker="o", color=colors[sampler], label=f"{'DiffuRec' if sampler == 'diffurec' else 'DiffRec ' + sampler}, B={int(users)}")
    for users, g in df[df["kind"] == "test_sasrec_scoring"].groupby("users"):
        ax.axhline(float(g["users/s"].max()), color="k", ls=styles.get(int(users), ":"), lw=0.8, label=f"SASRec scoring, B={int(users)}")
    ax.set(xscale="log", yscale="log", xlabel="N (denoiser calls per user; average: steps of the chain)", ylabel="users / s", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(json_path: Path, peer_json: Path = PEER_JSON) -> tuple[Path, Path]:
    data = json.loads(Path(json_path).read_text())
    recbole = load_recbole_reference(peer_json)
    df = frame(data)
    machine = data.get("machine_info", {})
    device = ", ".join(sorted(set(df["device"].dropna()))) or "cpu"
    title = f"{device}: {machine.get('cpu', {}).get('brand_raw', machine.get('machine', ''))}"
    md, png = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    cols = [c for c in ("test", "users", "rounds", "min_s", "median_s", "users/s", "seq/s", "epoch_s (extrapolated)") if c in df]
    text = (
        f"# Throughput benchmarks ({json_path.name})\n\n"
        f"Device: {title}; {data.get('datetime', '')}; timer `{data.get('benchmarks', [{}])[0].get('options', {}).get('timer', '?')}`; "
        f"torch threads {', '.join(map(str, sorted(set(df['threads'].dropna().astype(int)))))}. Times: fastest round (min) and median, seconds.\n\n"
        "## Speed targets (ratios from this one run; RecBole's from the peer benchmark's run)\n\n" + "\n".join(targets(df, recbole)) + "\n\n"
        f"## All cases\n\n{df[cols].astype({'users': 'Int64'}).to_markdown(index=False, floatfmt='.4g', missingval='')}\n\n![users/s vs N]({png.name})\n"
    )
    md.write_text(text)
    plot(df, png, title)
    return md, png


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.bench_report", description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON file(s), e.g. results/bench/cpu.json")
    p.add_argument("--peer", type=Path, default=PEER_JSON, help="the peer benchmark's JSON with RecBole's times (default results/bench/peer-recbole.json)")
    args = p.parse_args(argv)
    recbole = load_recbole_reference(args.peer)
    for path in args.json:
        for out in write_report(path, args.peer):
            print(f"wrote {out}")
        print("\n".join(targets(frame(json.loads(path.read_text())), recbole)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
