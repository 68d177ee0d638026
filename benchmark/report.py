"""Reports from run records only: `python -m benchmark.report [--out results] [--suite NAME ...]`
(or `--compare GLOB_A GLOB_B`: one paired comparison of two sets of records, printed).

For each suite found in OUT/runs/ it writes
- OUT/tables/<suite>.md and <suite>.tex: the paper's layout (datasets as column groups; HR and NDCG
  at 5/10/20, parameter count and training time; models as rows), mean ± std over seeds, best in
  bold, second underlined, † where DiffRec differs significantly from the column's best baseline;
  an unmasked and a history-masked table, each headed by the protocol card read from the records;
- OUT/tables/<suite>_significance.csv (every test), <suite>_ablations.md (every ablation cell);
- OUT/figures/<suite>/*.png and *.pdf: NDCG@10 vs diffusion steps per sampler, target vs sequence
  noising, quality vs inference cost, validation curves, and per-model training diagnostics
  (whatever extra numbers the records' curves hold: VAE active units, discriminator accuracy);
and OUT/README.md, which summarises the suites, links the figures and lists missing cells, under
the hand-written discussion OUT/discussion.md when there is one (the only file in OUT written by hand).
A record belongs to every packaged suite that holds its cell as the suite is defined now.

Significance: two-sided Wilcoxon signed-rank test over users of the per-user metric (averaged over
the seeds both models share), DiffRec vs the baseline with the best mean in that column, Holm
correction over all comparisons of one table, alpha 0.05.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from benchmark.config import ConfigError  # noqa: E402
from benchmark.data import DataError  # noqa: E402
from benchmark.metrics import SELECTION_METRIC, per_user_metrics  # noqa: E402
from benchmark.records import PROJECT_ROOT, atomic_path, load_records  # noqa: E402
from benchmark.registry import MODELS  # noqa: E402
from benchmark.suite import MAIN_TAGS, load_suite_file, resolve_suite, suite_names  # noqa: E402

TABLE_METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")
SUBJECT = "diffrec"  # the model whose significance against the best baseline is tested
ALPHA = 0.05
SPLITS = {"test": "Unmasked (history items stay in the ranking)", "test_masked": "History-masked (the user's earlier items removed from the ranking)"}
CURVE_BASE_KEYS = {"epoch", "valid", "eval_seconds", "loss"}
SAMPLER_KEYS = {"steps", "sampler", "sampler_steps", "samples"}


def is_subject(model: str) -> bool:
    return model == SUBJECT or model.startswith(SUBJECT + "-")


# ---------------------------------------------------------------------------------------------
# Statistics


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def paired_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-user values (1.0 when all pairs tie)."""
    if len(a) != len(b):
        raise ValueError(f"paired test needs the same users, got {len(a)} and {len(b)}")
    if not np.any(a != b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


# ---------------------------------------------------------------------------------------------
# Records -> frame


def tag_keys(tag: str) -> set[str]:
    return set() if tag in MAIN_TAGS else {part.split("=", 1)[0] for part in tag.split(",")}


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record."""
    rows = []
    for i, r in enumerate(records):
        users = r["dataset"].get("users_used", r["dataset"].get("users"))
        row = {
            "i": i,
            "key": r.get("key", ""),
            "suite": r.get("suite", ""),
            "dataset": r["dataset"]["name"],
            "model": r["model"],
            "tag": r.get("tag", "default"),
            "seed": r["seed"],
            "finished_at": r.get("finished_at", ""),
            "params": r.get("params", 0),
            "train_seconds": r["timings"]["train_seconds"],
            "test_seconds_per_1k": r["timings"]["eval_seconds_test"] / users * 1000,
            "device": r.get("environment", {}).get("device", "unknown"),
        }
        for split in SPLITS:
            for k, v in r["metrics"][split].items():
                row[f"{split}/{k}"] = v
        for k, v in r["config"]["model"].items():
            row[f"cfg.{k}"] = v if not isinstance(v, list) else tuple(v)
        rows.append(row)
    return pd.DataFrame(rows)


def suite_frame(suite: str, records: list[dict], keys: set[str] | None) -> pd.DataFrame:
    """The records of a suite: those whose cell the suite holds as it is defined now (`keys`; a cell
    shared by two suites, such as pop's, counts for both), else, for a suite that cannot be
    resolved here, those that name it; the latest record of each dataset/model/tag/seed."""
    frame = records_frame(records)
    if frame.empty:
        return frame
    frame = frame[frame.key.isin(keys)] if keys is not None else frame[frame.suite == suite]
    frame = frame.sort_values(["finished_at", "i"]).drop_duplicates(["dataset", "model", "tag", "seed"], keep="last")
    return frame.sort_values("i").reset_index(drop=True)


def main_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Main-table rows: tag default or tuned; where a (dataset, model) has tuned runs, only those."""
    main = frame[frame.tag.isin(MAIN_TAGS)]
    tuned = set(map(tuple, main.loc[main.tag == "tuned", ["dataset", "model"]].values))
    keep = [t == "tuned" or (d, m) not in tuned for d, m, t in main[["dataset", "model", "tag"]].values]
    return main[keep]


def noise_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The ablation rows that set the noising and at most how the model scores."""
    scoring = set(MODELS[SUBJECT].inference)
    return frame[frame.tag.map(lambda t: "noise" in tag_keys(t) and tag_keys(t) <= {"noise"} | scoring)]


def model_order(models) -> list[str]:
    known = list(MODELS)
    ordered = sorted(set(models), key=lambda m: (is_subject(m), known.index(m) if m in known else len(known), m))
    return ordered


# ---------------------------------------------------------------------------------------------
# Main tables


def significance(main: pd.DataFrame, records: list[dict], split: str) -> pd.DataFrame:
    """Every DiffRec-vs-best-baseline comparison of one table, Holm-corrected together."""
    ranks_key = "test_ranks" if split == "test" else "test_ranks_masked"
    rows = []
    for dataset, part in main.groupby("dataset", sort=False):
        baselines = part[~part.model.map(is_subject)]
        subjects = sorted(set(part.model[part.model.map(is_subject)]))
        if baselines.empty or not subjects:
            continue
        for metric in TABLE_METRICS:
            means = baselines.groupby("model")[f"{split}/{metric}"].mean()
            best = means.idxmax()
            for subject in subjects:
                seeds = sorted(set(part.seed[part.model == subject]) & set(part.seed[part.model == best]))
                per = {}
                for model in (subject, best):
                    rows_m = part[(part.model == model) & part.seed.isin(seeds)]
                    per[model] = np.mean([per_user_metrics(records[i]["per_user"][ranks_key])[metric] for i in rows_m.i], axis=0)
                try:
                    p = paired_pvalue(per[subject], per[best]) if seeds else float("nan")
                except ValueError:
                    p = float("nan")
                rows.append(
                    {"dataset": dataset, "metric": metric, "model": subject, "baseline": best, "seeds": len(seeds), "users": len(per[subject]) if seeds else 0,
                     "mean_model": float(np.mean(per[subject])) if seeds else float("nan"), "mean_baseline": float(np.mean(per[best])) if seeds else float("nan"), "p": p}
                )
    tests = pd.DataFrame(rows, columns=["dataset", "metric", "model", "baseline", "seeds", "users", "mean_model", "mean_baseline", "p", "p_holm", "significant"])
    if not tests.empty:
        valid = tests.p.notna()
        tests.loc[valid, "p_holm"] = holm(tests.p[valid].values)
        tests["significant"] = tests.p_holm < ALPHA
    return tests


def fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else f"{n:.0f}"


def table_cells(main: pd.DataFrame, split: str, tests: pd.DataFrame) -> tuple[list[str], list[str], dict]:
    """-> (models, datasets, {(model, dataset, column): (text, style)}) with style in {"", "best", "second"}."""
    datasets = list(dict.fromkeys(main.dataset))
    models = model_order(main.model)
    cells = {}
    max_seeds = main.groupby(["dataset", "model"]).seed.nunique().max()
    for dataset in datasets:
        part = main[main.dataset == dataset]
        g = part.groupby("model")
        for metric in TABLE_METRICS:
            col = f"{split}/{metric}"
            mean, std, n = g[col].mean(), g[col].std(), g[col].size()
            order = mean.sort_values(ascending=False, kind="stable")
            ranked = [m for m in order.index if not math.isnan(order[m])]
            for model in mean.index:
                text = mean_std(mean[model], std[model], n[model])
                if n[model] < max_seeds:
                    text += f" (n={n[model]})"
                hit = tests[(tests.dataset == dataset) & (tests.metric == metric) & (tests.model == model)] if not tests.empty else tests
                if not hit.empty and bool(hit.significant.iloc[0]):
                    text += " †"
                style = "best" if ranked and model == ranked[0] else "second" if len(ranked) > 1 and model == ranked[1] else ""
                cells[(model, dataset, metric)] = (text, style)
        for model, rows in g:
            cells[(model, dataset, "Params")] = (fmt_params(rows.params.mean()), "")
            cells[(model, dataset, "Train (s)")] = (f"{rows.train_seconds.mean():.0f}", "")
    return models, datasets, cells


COLUMNS = TABLE_METRICS + ("Params", "Train (s)")


def markdown_table(models, datasets, cells) -> str:
    header = ["Model"] + [f"{d} {c}" for d in datasets for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for model in models:
        row = [model]
        for d in datasets:
            for c in COLUMNS:
                text, style = cells.get((model, d, c), ("–", ""))
                row.append(f"**{text}**" if style == "best" else f"<u>{text}</u>" if style == "second" else text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text


def latex_table(models, datasets, cells, caption: str, label: str) -> str:
    ncol = len(COLUMNS)
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\resizebox{\textwidth}{!}{%",
        r"\begin{tabular}{l" + ("r" * ncol) * len(datasets) + "}",
        r"\toprule",
        " & ".join([""] + [rf"\multicolumn{{{ncol}}}{{c}}{{{latex_escape(d)}}}" for d in datasets]) + r" \\",
        " ".join(rf"\cmidrule(lr){{{2 + i * ncol}-{1 + (i + 1) * ncol}}}" for i in range(len(datasets))),
        " & ".join(["Model"] + [latex_escape(c) for _ in datasets for c in COLUMNS]) + r" \\",
        r"\midrule",
    ]
    for model in models:
        row = [latex_escape(model)]
        for d in datasets:
            for c in COLUMNS:
                text, style = cells.get((model, d, c), ("--", ""))
                text = text.replace(" ± ", r"$\pm$").replace(" †", r"$^\dagger$")
                row.append(rf"\textbf{{{text}}}" if style == "best" else rf"\underline{{{text}}}" if style == "second" else text)
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table*}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Protocol card


def protocol_card(recs: list[dict]) -> list[tuple[str, str]]:
    """(field, value) pairs read from the records of one table."""
    first = recs[0]["protocol"]

    def distinct(values) -> str:
        return "; ".join(dict.fromkeys(str(v) for v in values))

    datasets = {}
    for r in recs:
        d = r["dataset"]
        datasets[d["name"]] = f"{d['name']} ({d.get('users_used', d['users'])} of {d['users']} users, {d['items']} items, sha256 {d['sha256']})"
    losses, budgets, trials = {}, {}, {}
    for r in recs:
        m = r["model"]
        losses[m] = f"{m}: {r['config']['model']['loss']}" if "loss" in r["config"]["model"] else f"{m}: {r.get('model_about') or 'see model file'}"
        budgets[m] = r["protocol"]["early_stopping"] + (f", time budget {r['config']['train']['time_budget_s']:g}s" if r["config"]["train"].get("time_budget_s") else "")
        t = r.get("tuning") or {}
        trials.setdefault(m, {})[r["dataset"]["name"]] = f"{t['trials']} trials (study {t['study']})" if t else "defaults (untuned)"
    return [
        ("datasets", "; ".join(datasets.values())),
        ("split", first["split"]),
        ("max_len", distinct(r["protocol"]["max_len"] for r in recs)),
        ("ranking", first["ranking"]),
        ("ties", first["ties"]),
        ("masking", first["masking"]),
        ("selection", first["selection"]),
        ("losses", "; ".join(losses.values())),
        ("budgets", distinct(f"{m}: {b}" for m, b in budgets.items())),
        ("tuning trials", "; ".join(f"{m}: {tuning_per_dataset(by_dataset)}" for m, by_dataset in trials.items())),
        ("seeds", ", ".join(str(s) for s in sorted({r["seed"] for r in recs}))),
        ("git commit", distinct(r["environment"]["git_commit"] for r in recs)),
        ("environment", distinct(f"{e['device']}, torch {e['packages'].get('torch')}, python {e['python']}" for e in (r["environment"] for r in recs))),
    ]


def tuning_per_dataset(by_dataset: dict[str, str]) -> str:
    """{"beauty": "8 trials (study s)", "toys": "defaults (untuned)"} -> one phrase; the datasets are
    named only where they differ (studies are per dataset)."""
    if len(set(by_dataset.values())) == 1:
        return next(iter(by_dataset.values()))
    return ", ".join(f"{d} {v}" for d, v in by_dataset.items())


def card_markdown(card) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in card)


def card_latex(card) -> str:
    return "\n".join(f"% {k}: {v}" for k, v in card)


# ---------------------------------------------------------------------------------------------
# Figures


def save(fig, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    fig.tight_layout()
    for path in paths:  # no creation date in the PDF: the same records give the same bytes
        fig.savefig(path, dpi=150 if path.suffix == ".png" else None, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def _panels(n: int, width: float = 4.2, height: float = 3.2, per_row: int = 4):
    """n axes in rows of at most `per_row` (unused slots hidden)."""
    rows, cols = math.ceil(n / per_row), min(n, per_row)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def figure_steps(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Test NDCG@10 vs number of diffusion steps, one line per sampler (and its steps/samples)."""
    part = frame[frame.tag.map(lambda t: "steps" in tag_keys(t) and tag_keys(t) <= SAMPLER_KEYS) & frame.model.map(is_subject)]
    if part.empty or "cfg.steps" not in part or part["cfg.steps"].nunique() < 2:
        return []
    datasets = list(dict.fromkeys(part.dataset))
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets):
        d = part[part.dataset == dataset]
        label = d["cfg.sampler"].astype(str)
        for key, sampler, short in (("cfg.sampler_steps", "strided", "k"), ("cfg.samples", "average", "m")):
            if key in d:
                label = label + np.where(d["cfg.sampler"] == sampler, d[key].map(lambda v: f" {short}={v:g}"), "")
        for name, rows in d.assign(label=label).groupby("label"):
            s = rows.groupby("cfg.steps")["test/NDCG@10"].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        steps = sorted(d["cfg.steps"].unique())
        ax.set_xticks(steps, [f"{v:g}" for v in steps])
        ax.minorticks_off()
        ax.set(title=dataset, xlabel="diffusion steps N", ylabel="test NDCG@10")
        ax.legend(fontsize=7)
    return save(fig, folder, "ndcg_vs_steps")


def figure_noise(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Target-only vs whole-sequence noising (the points that set the noise and at most the
    sampler): test NDCG@10 and HR@10 (unmasked), labelled with the sampler that scored them."""
    part = noise_points(frame)
    if part.empty or part["cfg.noise"].nunique() < 2:
        return []
    part = part.assign(noising=part["cfg.noise"] + " (" + part["cfg.sampler"] + ")")
    fig, axes = _panels(2)
    for ax, metric in zip(axes, ("NDCG@10", "HR@10")):
        s = part.groupby(["dataset", "noising"])[f"test/{metric}"].agg(["mean", "std"]).fillna(0.0)
        table = s["mean"].unstack("noising")
        table.plot.bar(ax=ax, yerr=s["std"].unstack("noising"), capsize=3, rot=0)
        ax.set(ylabel=f"test {metric}", xlabel="", title=f"noising: {metric}")
        ax.legend(title="noise (sampler)", fontsize=7)
    return save(fig, folder, "noise_target_vs_sequence")


def cost_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One point per dataset, model, setting and device: mean test seconds per 1,000 users and mean
    test NDCG@10 over the seeds run there. Devices stay apart: a GPU's and a CPU's seconds do not
    average into one cost."""
    keys = ["dataset", "model", "tag", "device"]
    return frame.groupby(keys, sort=True).agg(cost=("test_seconds_per_1k", "mean"), ndcg=("test/NDCG@10", "mean"), seeds=("seed", "nunique")).reset_index()


COST_MARKERS = "o^sDvP"


def figure_cost(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Test NDCG@10 vs inference time per 1,000 users (every record of the suite), one marker
    shape per device."""
    points = cost_points(frame)
    marker = dict(zip(sorted(points.device.unique()), itertools.cycle(COST_MARKERS)))
    color = {model: f"C{i % 10}" for i, model in enumerate(model_order(points.model.unique()))}  # a model keeps its colour across devices
    datasets = list(dict.fromkeys(frame.dataset))
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets):
        here = points[points.dataset == dataset]
        for row in here.itertuples():
            main = row.tag in MAIN_TAGS
            ax.scatter(row.cost, row.ndcg, s=30 if main else 12, marker=marker[row.device], color=color[row.model] if main else "0.6", zorder=3 if main else 2)
            ax.annotate(row.model if main else row.tag, (row.cost, row.ndcg), fontsize=6 if main else 5, xytext=(3, 2), textcoords="offset points")
        for device in sorted(here.device.unique()):
            ax.scatter([], [], marker=marker[device], color="0.3", label=device)
        ax.legend(title="device", fontsize=6, title_fontsize=6, loc="lower right")
        ax.set_xscale("log")
        ax.set(title=dataset, xlabel="test inference seconds per 1,000 users", ylabel="test NDCG@10")
    return save(fig, folder, "quality_vs_cost")


def figure_curves(main: pd.DataFrame, records: list[dict], folder: Path) -> list[Path]:
    """Validation NDCG@10 per evaluation (lowest seed of each model; datasets where some model trained)."""
    main = main[[bool(records[i]["curve"]) for i in main.i]]
    datasets = list(dict.fromkeys(main.dataset))
    if not datasets:
        return []
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets):
        d = main[main.dataset == dataset].sort_values("seed")
        for model in model_order(d.model):
            curve = records[d[d.model == model].i.iloc[0]]["curve"]
            ax.plot([p["epoch"] for p in curve], [p["valid"][SELECTION_METRIC] for p in curve], marker=".", label=model)
        ax.set(title=dataset, xlabel="epoch", ylabel=f"validation {SELECTION_METRIC}")
        ax.legend(fontsize=7)
    return save(fig, folder, "validation_curves")


def figure_diagnostics(main: pd.DataFrame, records: list[dict], folder: Path) -> list[Path]:
    """Per model, every extra number its curve records (active VAE units, discriminator accuracy, loss parts)."""
    paths = []
    for model in model_order(main.model):
        d = main[main.model == model].sort_values("seed").drop_duplicates("dataset")
        curves = {row.dataset: records[row.i]["curve"] for row in d.itertuples()}
        keys = sorted({k for c in curves.values() for p in c for k, v in p.items() if k not in CURVE_BASE_KEYS and isinstance(v, (int, float))})
        if not keys:
            continue
        fig, axes = _panels(len(keys), 3.6, 2.8)
        for ax, key in zip(axes, keys):
            for dataset, curve in curves.items():
                pts = [(p["epoch"], p[key]) for p in curve if key in p]
                if pts:
                    ax.plot(*zip(*pts), marker=".", label=dataset)
            ax.set(title=f"{model}: {key}", xlabel="epoch")
            ax.legend(fontsize=7)
        paths += save(fig, folder, f"diagnostics_{model}")
    return paths


# ---------------------------------------------------------------------------------------------
# Suite report


def mean_std(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f}" + (f" ± {std:.4f}" if n > 1 else "")


ABLATION_NOTE = (
    "A setting that changes only how the trained model scores (DiffRec's `sampler`, `sampler_steps`, `samples`) is scored on "
    "the model trained, and selected on validation, with the base setting's sampler (its record's `protocol.inference`), so "
    "those rows compare samplers on one trained model; every other setting trains its own. \"test s / 1k users\" times the "
    "test pass (scoring and ranking) per 1,000 users. \"main\" is the main table's cell of the same dataset and model on the "
    "seeds the setting has; p: two-sided Wilcoxon signed-rank over per-user test NDCG@10 (each user's value averaged over "
    "those seeds), not corrected for the number of rows. \"device\" names where the row's seeds ran: timings of different "
    "devices do not compare."
)


def seed_mean_per_user(records: list[dict], indices, ranks: str = "test_ranks") -> np.ndarray:
    """Per-user NDCG@10 of the records at `indices` (one run per seed), averaged over them."""
    return np.mean([per_user_metrics(records[i]["per_user"][ranks])["NDCG@10"] for i in indices], axis=0)


def ablation_markdown(frame: pd.DataFrame, records: list[dict]) -> str:
    """One row per ablation setting, with its main-table cell on the same seeds beside it: that
    cell's NDCG@10 and the Wilcoxon p-value of the per-user NDCG@10 (seed-averaged), uncorrected."""
    part = frame[~frame.tag.isin(MAIN_TAGS)]
    if part.empty:
        return ""
    main = frame[frame.tag.isin(MAIN_TAGS)]
    cols = {"test/NDCG@10": "NDCG@10", "test/HR@10": "HR@10", "test_masked/NDCG@10": "masked NDCG@10", "test_masked/HR@10": "masked HR@10"}

    rows = []
    for (dataset, model, tag), g in part.groupby(["dataset", "model", "tag"], sort=True):
        row = {"dataset": dataset, "model": model, "setting": tag}
        row.update({name: mean_std(g[col].mean(), g[col].std(), len(g)) for col, name in cols.items()})
        row["seeds"] = len(g)
        base = main[(main.dataset == dataset) & (main.model == model)]
        seeds = sorted(set(g.seed) & set(base.seed))
        if seeds:
            mine, theirs = g[g.seed.isin(seeds)], base[base.seed.isin(seeds)]
            row["main NDCG@10 (same seeds)"] = f"{theirs['test/NDCG@10'].mean():.4f}"
            row["p vs main"] = f"{paired_pvalue(seed_mean_per_user(records, mine.i), seed_mean_per_user(records, theirs.i)):.2g}"
        else:
            row["main NDCG@10 (same seeds)"] = row["p vs main"] = "–"
        row["test s / 1k users"] = f"{g.test_seconds_per_1k.mean():.3f}"
        row["device"] = ", ".join(sorted(set(g.device)))  # the seconds are only comparable on one device
        rows.append(row)
    rows.sort(key=lambda r: (r["dataset"], r["model"], natural_key(r["setting"])))
    return pd.DataFrame(rows).to_markdown(index=False)


NOISE_NOTE = (
    "Both noisings scored with the same sampler, on the seeds both have; p: two-sided Wilcoxon signed-rank over per-user "
    "test NDCG@10 (each user's value averaged over those seeds), unmasked and history-masked."
)


def noise_markdown(frame: pd.DataFrame, records: list[dict]) -> str:
    """Target-only against whole-sequence noising: one row per dataset, model and scoring setting
    that has both points, on their common seeds, with paired tests."""
    part = noise_points(frame)
    if part.empty:
        return ""
    part = part.assign(scored=part.tag.map(lambda t: ",".join(p for p in t.split(",") if not p.startswith("noise=")) or "as trained"))
    rows = []
    for (dataset, model, scored), g in part.groupby(["dataset", "model", "scored"], sort=True):
        target, sequence = g[g["cfg.noise"] == "target"], g[g["cfg.noise"] == "sequence"]
        seeds = sorted(set(target.seed) & set(sequence.seed))
        if not seeds:
            continue
        target, sequence = target[target.seed.isin(seeds)], sequence[sequence.seed.isin(seeds)]
        row = {"dataset": dataset, "model": model, "scored with": scored, "seeds": len(seeds)}
        for split, ranks, label in (("test", "test_ranks", ""), ("test_masked", "test_ranks_masked", "masked ")):
            row[f"{label}target NDCG@10"] = mean_std(target[f"{split}/NDCG@10"].mean(), target[f"{split}/NDCG@10"].std(), len(seeds))
            row[f"{label}sequence NDCG@10"] = mean_std(sequence[f"{split}/NDCG@10"].mean(), sequence[f"{split}/NDCG@10"].std(), len(seeds))
            row[f"{label}p"] = f"{paired_pvalue(seed_mean_per_user(records, sequence.i, ranks), seed_mean_per_user(records, target.i, ranks)):.2g}"
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False) if rows else ""


def natural_key(text: str) -> list:
    """"steps=200" after "steps=50": digit runs compare as numbers."""
    return [(0, float(part), "") if part[:1].isdigit() else (1, 0.0, part) for part in re.split(r"(\d+(?:\.\d+)?)", text) if part]


def resolved_cells(suite: str, out: Path) -> list | None:
    """The cells of a packaged suite as it is defined now, with OUT's tuned parameters (None if it
    is not a packaged suite or cannot be resolved here)."""
    if suite not in suite_names():
        return None
    try:
        return list(resolve_suite(*load_suite_file(suite), tuning_dir=out / "tuning").cells)
    except (ConfigError, DataError):
        return None


def missing_cells(defined: list | None, done: set[str]) -> dict[str, list[int]] | None:
    """The suite's cells without a record: {"dataset / model / tag": [seeds]} in suite order (None
    when the suite's cells are unknown)."""
    if defined is None:
        return None
    missing: dict[str, list[int]] = {}
    for c in defined:
        if c.key not in done:
            missing.setdefault(f"{c.dataset} / {c.model} / {c.tag}", []).append(c.seed)
    return missing


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def suite_report(suite: str, records: list[dict], out: Path, draw: bool = True) -> dict:
    """Writes one suite's tables (and figures if `draw`); returns what the README needs."""
    defined = resolved_cells(suite, out)
    frame = suite_frame(suite, records, None if defined is None else {c.key for c in defined})
    if frame.empty:
        return {"suite": suite, "tables": [], "figures": [], "records": 0, "main": [], "missing": missing_cells(defined, set())}
    main = main_frame(frame)
    tables, figures = out / "tables", out / "figures" / suite
    written, md_sections, tex_sections = [], [], []
    sig_frames = []
    for split, title in SPLITS.items():
        if main.empty:
            break
        tests = significance(main, records, split)
        sig_frames.append(tests.assign(split=split))
        models, datasets, cells = table_cells(main, split, tests)
        card = protocol_card([records[i] for i in main.i])
        n = int(tests.p_holm.notna().sum()) if not tests.empty else 0
        note = (
            f"Mean ± std over seeds; best **bold**, second <u>underlined</u>; † = {SUBJECT} differs from the best baseline of the column "
            f"(two-sided Wilcoxon signed-rank over per-user values, Holm-corrected over the {n} comparisons of this table, α = {ALPHA}). "
            "(n=k): only k seeds. Params = parameter count; Train (s) = training wall time including validation."
        )
        md_sections.append(f"## {title}\n\nProtocol card:\n\n{card_markdown(card)}\n\n{markdown_table(models, datasets, cells)}\n\n{note}\n")
        caption = latex_escape(f"Suite {suite}, {title.split(' (')[0].lower()} test metrics. ") + note.replace("**bold**", "bold").replace("<u>underlined</u>", "underlined").replace("†", r"$^\dagger$").replace("α", r"$\alpha$").replace("±", r"$\pm$")
        tex_sections.append(f"% Protocol card ({title})\n{card_latex(card)}\n{latex_table(models, datasets, cells, caption, f'tab:{suite}-{split}')}\n")
    summary = {"suite": suite, "tables": [], "figures": [], "records": len(frame), "main": md_sections}
    if md_sections:
        summary["tables"] += [
            write_text(tables / f"{suite}.md", f"# Suite `{suite}`: test metrics\n\n" + "\n".join(md_sections)),
            write_text(tables / f"{suite}.tex", "% Generated by python -m benchmark.report; needs \\usepackage{booktabs,graphicx}\n" + "\n".join(tex_sections)),
        ]
        sig = pd.concat(sig_frames)
        if not sig.empty:
            summary["tables"].append(write_text(tables / f"{suite}_significance.csv", sig.to_csv(index=False)))
    ablations = ablation_markdown(frame, records)
    if ablations:
        noise = noise_markdown(frame, records)
        noise = f"\n## Target-only against whole-sequence noising\n\n{NOISE_NOTE}\n\n{noise}\n" if noise else ""
        summary["tables"].append(write_text(tables / f"{suite}_ablations.md", f"# Suite `{suite}`: ablation cells (test metrics, mean ± std over seeds)\n\n{ABLATION_NOTE}\n\n{ablations}\n{noise}"))
    if draw:
        summary["figures"] = figure_steps(frame, figures) + figure_noise(frame, figures) + figure_cost(frame, figures)
        if not main.empty:
            summary["figures"] += figure_curves(main, records, figures) + figure_diagnostics(main, records, figures)
    summary["missing"] = missing_cells(defined, {records[i]["key"] for i in frame.i})
    return summary


DISCUSSION = "discussion.md"  # hand-written findings, copied into OUT/README.md above the generated part


def readme(summaries: list[dict], out: Path) -> str:
    lines = [
        "# Results",
        "",
        f"Generated by `python -m benchmark.report` from the run records in `runs/` on {datetime.now(timezone.utc).isoformat(timespec='seconds')}; do not edit by hand.",
        "",
        "**How to check any number here.** Each number comes from run records in `runs/` (one per seed; a file's name is its cell's key). "
        "From this folder, `python -m benchmark.reproduce runs/<key>.json` re-runs that record's cell (its stored config and seed, the dataset checked by sha256, "
        "the same device kind and thread count) in a scratch folder, and prints each metric stored and reproduced and a verdict: identical, within a tolerance you give, "
        "or different; `--check-only` recomputes the test metrics from the record's per-user ranks without training.",
        "",
    ]
    discussion = out / DISCUSSION
    if discussion.exists():  # the one hand-written part: what the tables below show
        lines += [f"## Discussion (hand-written: [{DISCUSSION}]({DISCUSSION}))", "", discussion.read_text().strip(), ""]
    for s in summaries:
        lines += [f"## Suite `{s['suite']}`", "", f"{s['records']} run records. Tables: " + ", ".join(f"[{p.name}]({p.relative_to(out).as_posix()})" for p in s["tables"]), ""]
        for section in s["main"]:
            lines += [section.replace("## ", "### ", 1), ""]
        pngs = sorted((out / "figures" / s["suite"]).glob("*.png"))
        if pngs:
            lines += ["Figures:", ""]
            for p in pngs:
                rel = p.relative_to(out).as_posix()
                lines += [f"- [{p.stem}]({rel}) ([pdf]({rel[:-4]}.pdf))", "", f"  ![{p.stem}]({rel})", ""]
        if s["missing"] is None:
            lines += ["Missing cells: unknown (not a packaged suite, or it cannot be resolved here).", ""]
        elif s["missing"]:
            count = sum(map(len, s["missing"].values()))
            lines += [f"Missing cells ({count}, relative to the suite file as it is now):", ""]
            lines += [f"- {m}: seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}" for m, seeds in s["missing"].items()] + [""]
        else:
            lines += ["No missing cells.", ""]
    return "\n".join(lines)


def compare(out: str | Path, pattern_a: str, pattern_b: str) -> str:
    """A paired comparison of two sets of run records, named by file-name globs under OUT/runs/
    (one record per seed each): test NDCG@10 and the Wilcoxon p over users, unmasked and masked,
    seed by seed and averaged over the seeds both have (as the tables do). Raises ValueError."""
    sides = []
    for pattern in (pattern_a, pattern_b):
        by_seed: dict[int, dict] = {}
        for path in sorted((Path(out) / "runs").glob(pattern)):
            if path.suffix != ".json":
                continue
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not a JSON run record ({exc})") from None
            if record["seed"] in by_seed:
                raise ValueError(f"{pattern!r} matches two records of seed {record['seed']}: {by_seed[record['seed']]['key']} and {record['key']}; narrow it")
            by_seed[record["seed"]] = record
        if not by_seed:
            raise ValueError(f"{pattern!r} matches no run record in {Path(out) / 'runs'}")
        sides.append(by_seed)
    seeds = sorted(set(sides[0]) & set(sides[1]))
    if not seeds:
        raise ValueError(f"no seed in common: {pattern_a!r} has {sorted(sides[0])}, {pattern_b!r} has {sorted(sides[1])}")
    rows = []
    for label, group in [(str(seed), [seed]) for seed in seeds] + ([(f"mean of {len(seeds)}", seeds)] if len(seeds) > 1 else []):
        row = {"seed": label}
        for ranks, name in (("test_ranks", ""), ("test_ranks_masked", "masked ")):
            a, b = (seed_mean_per_user([side[seed] for seed in group], range(len(group)), ranks) for side in sides)
            row.update({f"{name}A NDCG@10": f"{a.mean():.4f}", f"{name}B NDCG@10": f"{b.mean():.4f}", f"{name}p": f"{paired_pvalue(a, b):.2g}"})
        rows.append(row)
    names = "\n".join(f"{side}: " + ", ".join(r["key"] for r in records.values()) for side, records in zip("AB", sides))
    return f"{names}\n\n{pd.DataFrame(rows).to_markdown(index=False)}"


def write_report(out: str | Path, suites: list[str] | None = None) -> list[Path]:
    """Tables and figures of `suites` (default: every suite with records) and OUT/README.md."""
    out = Path(out)
    records = load_records(out / "runs") if (out / "runs").is_dir() else []
    if not records:
        return []
    found = list(dict.fromkeys(r.get("suite", "") for r in records))
    # The README covers every suite with records; suites not asked for keep their figures as they are.
    summaries = [suite_report(s, records, out, draw=suites is None or s in suites) for s in found]
    paths = [p for s in summaries if suites is None or s["suite"] in suites for p in s["tables"] + s["figures"]]
    paths.append(write_text(out / "README.md", readme(summaries, out)))
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(PROJECT_ROOT / "results"), help="results folder holding runs/ (default: results/)")
    p.add_argument("--suite", nargs="+", help="only these suites' tables and figures (default: all with records)")
    p.add_argument("--compare", nargs=2, metavar=("GLOB_A", "GLOB_B"), help="instead of the report, compare two sets of records, e.g. 'beauty__diffrec__tuned__s*' 'beauty__sasrec-ce__tuned__s*'")
    args = p.parse_args(argv)
    if args.compare:
        try:
            print(compare(args.out, *args.compare))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    paths = write_report(args.out, args.suite)
    if not paths:
        print(f"error: no run records under {Path(args.out) / 'runs'}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
