"""Markdown tables of a suite's run records (mean and std over seeds), written to OUT/tables/."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.records import load_records

COLUMNS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def records_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {"dataset": r["dataset"]["name"], "model": r["model"], "tag": r.get("tag", "default"), "seed": r["seed"]}
        for split in ("test", "test_masked"):
            for k, v in r["metrics"][split].items():
                row[f"{split}/{k}"] = v
        row["s/epoch"] = r["timings"]["seconds_per_epoch"]
        row["best_epoch"] = r["best_epoch"]
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(frame: pd.DataFrame, split: str) -> str:
    cols = [f"{split}/{c}" for c in COLUMNS] + ["s/epoch"]
    g = frame.groupby(["dataset", "tag", "model"], sort=True)[cols]
    mean, std, n = g.mean(), g.std().fillna(0.0), g.size()
    out = mean.copy().astype(object)
    for c in cols:
        out[c] = [f"{m:.4f} ± {s:.4f}" if c != "s/epoch" else f"{m:.1f}" for m, s in zip(mean[c], std[c])]
    out.columns = [c.removeprefix(f"{split}/") for c in cols]
    out["seeds"] = n
    return out.reset_index().to_markdown(index=False)


def write_tables(out: str | Path, suite: str) -> list[Path]:
    out = Path(out)
    records = [r for r in load_records(out) if r.get("suite") == suite]
    if not records:
        return []
    frame = records_frame(records)
    path = out / "tables" / f"{suite}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"# Suite `{suite}`: test metrics (mean ± std over seeds)\n\n"
        "Full ranking, pessimistic ties, leave-one-out; model selection on validation NDCG@10 (unmasked).\n\n"
        f"## Unmasked (history items stay in the ranking)\n\n{summary_markdown(frame, 'test')}\n\n"
        f"## History-masked (the user's earlier items removed from the ranking)\n\n{summary_markdown(frame, 'test_masked')}\n"
    )
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return [path]
