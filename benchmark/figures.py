"""The report's figures, PNG and PDF. Each answers one question, which its title asks; a model has
one colour in every figure (MODEL_COLORS); a legend names the points instead of a label on each; a
panel with nothing to compare (one model, one setting) is left out, and a figure without panels is
not drawn. The callers in benchmark.report choose the records each figure shows."""
from __future__ import annotations

import itertools
import math
import textwrap
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from benchmark.metrics import SELECTION_METRIC  # noqa: E402
from benchmark.suite import MAIN_TAGS  # noqa: E402
from benchmark.tables import column_groups  # noqa: E402

# Fixed per model, so a reader who learns "DiffRec is red" in one figure can trust it in the next.
MODEL_COLORS = {
    "pop": "#7f7f7f",
    "sasrec-bce": "#9ecae1",
    "sasrec-ce": "#1f77b4",
    "svae": "#98df8a",
    "contrastvae": "#2ca02c",
    "mfgan": "#9467bd",
    "diffurec": "#ff7f0e",
    "diffrec": "#d62728",
}
OTHER_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#c49c94", "#f7b6d2", "#dbdb8d", "#393b79")
DEVICE_MARKERS = "o^sDvP"
# Series that are not models (samplers, datasets, noisings) are drawn in greys with line styles and
# markers, so no colour in any figure means anything but a model.
SERIES_STYLES = tuple(dict(color=c, linestyle=ls, marker=m) for c, ls, m in
                      (("black", "-", "o"), ("0.5", "--", "s"), ("black", ":", "^"), ("0.5", "-.", "D"), ("0.25", (0, (5, 1)), "v"), ("0.65", "-", "P")))


def series_style(i: int) -> dict:
    return SERIES_STYLES[i % len(SERIES_STYLES)]
CURVE_BASE_KEYS = {"epoch", "valid", "valid_masked", "eval_seconds", "loss"}


def model_color(model: str) -> str:
    """The model's colour; a model not in MODEL_COLORS gets one from its name alone (crc32, not
    Python's salted hash), so it too keeps its colour whichever models share the figure."""
    return MODEL_COLORS.get(model) or OTHER_COLORS[zlib.crc32(model.encode()) % len(OTHER_COLORS)]


def ordered_models(models) -> list[str]:
    return [m for _, ms in column_groups(models) for m in ms]


def save(fig, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for path in paths:  # no creation date in the PDF: the same records give the same bytes
        fig.savefig(path, dpi=150 if path.suffix == ".png" else None, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def panels(n: int, question: str, width: float = 4.2, height: float = 3.2, per_row: int = 3):
    """A figure of n axes in rows of at most `per_row`, titled with the question it answers."""
    rows, cols = math.ceil(n / per_row), min(n, per_row)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.6, height * rows + 0.5), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(question, fontsize=11)
    return fig, list(axes.flat[:n])


def figure_steps(part: pd.DataFrame, folder: Path) -> list[Path]:
    """Test NDCG@10 vs number of diffusion steps, one line per sampler (and its steps/samples);
    `part` holds the step ablation's records. A dataset with one step count is left out."""
    if part.empty or "cfg.steps" not in part:
        return []
    datasets = [d for d in dict.fromkeys(part.dataset) if part[part.dataset == d]["cfg.steps"].nunique() > 1]
    if not datasets:
        return []
    fig, axes = panels(len(datasets), "How does DiffRec's test NDCG@10 change with the number of diffusion steps N, per sampler?")
    for ax, dataset in zip(axes, datasets):
        d = part[part.dataset == dataset]
        label = d["cfg.sampler"].astype(str)
        for key, sampler, short in (("cfg.sampler_steps", "strided", "k"), ("cfg.samples", "average", "m")):
            if key in d:
                label = label + np.where(d["cfg.sampler"] == sampler, d[key].map(lambda v: f" {short}={v:g}"), "")
        for i, (name, rows) in enumerate(d.assign(label=label).groupby("label")):
            s = rows.groupby("cfg.steps")["test/NDCG@10"].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(s.index, s["mean"], yerr=s["std"], capsize=3, label=name, **series_style(i))
        ax.set_xscale("log")
        steps = sorted(d["cfg.steps"].unique())
        ax.set_xticks(steps, [f"{v:g}" for v in steps])
        ax.minorticks_off()
        ax.set(title=dataset, xlabel="diffusion steps N", ylabel="test NDCG@10")
        ax.legend(fontsize=7, title="sampler", title_fontsize=7)
    return save(fig, folder, "ndcg_vs_steps")


def figure_noise(part: pd.DataFrame, folder: Path) -> list[Path]:
    """Target-only vs whole-sequence noising: test NDCG@10 and HR@10 (unmasked) per dataset that
    has both, labelled with the sampler that scored them; `part` holds the noising ablation."""
    if part.empty:
        return []
    part = part[part.dataset.map(part.groupby("dataset")["cfg.noise"].nunique()) > 1]
    if part.empty:
        return []
    part = part.assign(noising=part["cfg.noise"] + " (" + part["cfg.sampler"] + ")")
    fig, axes = panels(2, "Does DiffRec rank better when it noises only the target or the whole sequence?")
    for ax, metric in zip(axes, ("NDCG@10", "HR@10")):
        s = part.groupby(["dataset", "noising"])[f"test/{metric}"].agg(["mean", "std"]).fillna(0.0)
        means = s["mean"].unstack("noising")
        means.plot.bar(ax=ax, yerr=s["std"].unstack("noising"), capsize=3, rot=0, color=[("0.3", "0.75")[i % 2] for i in range(means.shape[1])], edgecolor="black")
        ax.set(ylabel=f"test {metric}", xlabel="", title=metric)
        ax.get_legend().remove()  # one legend for both panels, outside them: it covers no bar
    fig.legend(*axes[0].get_legend_handles_labels(), title="noise (sampler)", loc="outside right center", fontsize=7, title_fontsize=7)
    return save(fig, folder, "noise_target_vs_sequence")


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats on both cost (lower) and quality (higher), cheapest first."""
    front, best = [], -np.inf
    for row in points.sort_values(["cost", "ndcg"], ascending=[True, False]).itertuples():
        if row.ndcg > best:
            front.append(row.Index)
            best = row.ndcg
    return points.loc[front]


def figure_cost(points: pd.DataFrame, folder: Path) -> list[Path]:
    """Test NDCG@10 vs inference time per 1,000 users: main-table points in their model's colour, the
    other settings (ablations) small and grey, one marker shape per device, the Pareto front as a
    dashed line; a legend, no per-point labels. A dataset with fewer than two models is left out."""
    datasets = [d for d in dict.fromkeys(points.dataset) if points[(points.dataset == d) & points.tag.isin(MAIN_TAGS)].model.nunique() > 1]
    if not datasets:
        return []
    marker = dict(zip(sorted(points.device.unique()), itertools.cycle(DEVICE_MARKERS)))
    fig, axes = panels(len(datasets), "Which models give the best test NDCG@10 for their inference time?")
    for ax, dataset in zip(axes, datasets):
        here = points[points.dataset == dataset]
        for row in here.itertuples():
            main = row.tag in MAIN_TAGS
            ax.scatter(row.cost, row.ndcg, s=36 if main else 12, marker=marker[row.device], color=model_color(row.model) if main else "0.7",
                       edgecolors="black" if main else "none", linewidths=0.4, zorder=3 if main else 2)
        front = pareto_front(here)
        ax.step(front.cost, front.ndcg, where="post", color="0.4", linestyle="--", linewidth=0.8, zorder=1)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()  # within two decades label 0.1, 0.2, 0.5, 1; over more, the powers of ten alone
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if hi / lo < 100 else (1,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels pile up when the axis spans under a decade
        ax.set(title=dataset, xlabel="test inference seconds per 1,000 users", ylabel="test NDCG@10")
    shown = points[points.dataset.isin(datasets)]
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, markerfacecolor=model_color(m), markeredgecolor="black", markeredgewidth=0.4, label=m)
               for m in ordered_models(shown[shown.tag.isin(MAIN_TAGS)].model)]
    if (~shown.tag.isin(MAIN_TAGS)).any():
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=4, color="0.7", label="other settings\n(ablation table)"))
    handles.append(Line2D([], [], color="0.4", linestyle="--", linewidth=0.8, label="Pareto front"))
    handles += [Line2D([], [], linestyle="", marker=marker[d], color="0.3", label=d) for d in sorted(shown.device.unique())]
    fig.legend(handles=handles, loc="outside right center", fontsize=7)
    return save(fig, folder, "quality_vs_cost")


def figure_curves(main: pd.DataFrame, records: list[dict], folder: Path) -> list[Path]:
    """Validation NDCG@10 per evaluation, lowest seed of each model, in the model's colour; a
    dataset where fewer than two models trained (a curve) is left out."""
    main = main[[bool(records[i]["curve"]) for i in main.i]]
    datasets = [d for d in dict.fromkeys(main.dataset) if main[main.dataset == d].model.nunique() > 1]
    if not datasets:
        return []
    fig, axes = panels(len(datasets), f"How quickly does each model reach its best validation {SELECTION_METRIC}?")
    for ax, dataset in zip(axes, datasets):
        d = main[main.dataset == dataset].sort_values("seed")
        for model in ordered_models(d.model):
            curve = records[d[d.model == model].i.iloc[0]]["curve"]
            ax.plot([p["epoch"] for p in curve], [p["valid"][SELECTION_METRIC] for p in curve], marker=".", color=model_color(model), label=model)
        ax.set(title=dataset, xlabel="epoch", ylabel=f"validation {SELECTION_METRIC}")
    models = ordered_models(main[main.dataset.isin(datasets)].model)
    fig.legend(handles=[Line2D([], [], color=model_color(m), marker=".", label=m) for m in models], loc="outside right center", fontsize=7)
    return save(fig, folder, "validation_curves")


def figure_ablation_curves(frame: pd.DataFrame, records: list[dict], folder: Path) -> list[Path]:
    """Validation NDCG@10 per evaluation of every training an ablation makes, beside its main cell's:
    one panel per dataset and model with an ablation setting that trains (a setting that only scores
    differently reuses its base's training and curve), the lowest seed of each setting; solid
    unmasked, dashed history-masked where the record has it (older records hold unmasked only). Each
    setting is named by the keys in which the panel's settings differ; a training shared by the
    cells of several selection rules is drawn once, with its rules."""
    trained = frame[[bool(records[i]["curve"]) and not records[i].get("training", {}).get("reused") for i in frame.i]]
    trained = trained.sort_values("seed").drop_duplicates(["dataset", "model", "tag"])
    groups = [(key, g) for key, g in trained.groupby(["dataset", "model"], sort=False) if (~g.tag.isin(MAIN_TAGS)).any() and len(g) > 1]
    if not groups:
        return []
    fig, axes = panels(len(groups), f"How does each ablation setting train?\n(validation {SELECTION_METRIC}, lowest seed; solid unmasked, dashed history-masked)", 5.0, 3.4, per_row=2)
    for ax, ((dataset, model), g) in zip(axes, groups):
        parts = {tag: tag.split(",") for tag in g.tag if tag not in MAIN_TAGS}
        common = set.intersection(*map(set, parts.values())) if len(parts) > 1 else set()
        for n, row in enumerate(g.sort_values("tag", key=lambda t: ~t.isin(MAIN_TAGS)).itertuples()):
            label = row.tag if row.tag in MAIN_TAGS else ",".join(p for p in parts[row.tag] if p not in common)
            rules = records[row.i].get("training", {}).get("selections", [])
            if len(rules) > 1:  # one training served the cells of each rule (benchmark.run): draw it once, named so
                label = ",".join(p for p in label.split(",") if not p.startswith("train.selection="))
            seed = f"s{row.seed}" + (f", selected {' and '.join(rules)}" if len(rules) > 1 else "")
            curve, color = records[row.i]["curve"], plt.cm.tab10(n % 10)
            epochs = [p["epoch"] for p in curve]
            ax.plot(epochs, [p["valid"][SELECTION_METRIC] for p in curve], color=color, linewidth=1, label=textwrap.fill(f"{label} ({seed})".lstrip(), 60))  # a setting's keys make long labels
            if all("valid_masked" in p for p in curve):
                ax.plot(epochs, [p["valid_masked"][SELECTION_METRIC] for p in curve], color=color, linewidth=1, linestyle="--")
        ax.set(title=f"{dataset} / {model}", xlabel="epoch", ylabel=f"validation {SELECTION_METRIC}")
        ax.legend(fontsize=5, title=",".join(sorted(common)) if common else None, title_fontsize=5)
    return save(fig, folder, "ablation_curves")


def figure_diagnostics(main: pd.DataFrame, records: list[dict], folder: Path) -> list[Path]:
    """Per model, every extra number its curve records (active VAE units, discriminator accuracy,
    loss parts), one line per dataset."""
    paths = []
    for model in ordered_models(main.model):
        d = main[main.model == model].sort_values("seed").drop_duplicates("dataset")
        curves = {row.dataset: records[row.i]["curve"] for row in d.itertuples()}
        keys = sorted({k for c in curves.values() for p in c for k, v in p.items() if k not in CURVE_BASE_KEYS and isinstance(v, (int, float))})
        if not keys:
            continue
        fig, axes = panels(len(keys), f"How do {model}'s training diagnostics move over the epochs (lowest seed, one line per dataset)?", 3.6, 2.8)
        for ax, key in zip(axes, keys):
            for i, (dataset, curve) in enumerate(curves.items()):
                pts = [(p["epoch"], p[key]) for p in curve if key in p]
                if pts:
                    ax.plot(*zip(*pts), markersize=3, label=dataset, **series_style(i))
            ax.set(title=key, xlabel="epoch")
            ax.legend(fontsize=7)
        paths += save(fig, folder, f"diagnostics_{model}")
    return paths
