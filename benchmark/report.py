"""Reports from run records only: `python -m benchmark.report [--out results] [--suite NAME ...]
[--pdf]` (or `--compare GLOB_A GLOB_B`: one paired comparison of two sets of records, printed). OUT
defaults to the folder `benchmark.run` writes the suite into: runs-local/<suite>/ for one suite that
is not committed (smoke), else results/, whose report covers the committed suites only.

For each suite found in OUT/runs/ it writes
- OUT/tables/<suite>.md and <suite>.tex (benchmark.tables): the paper's layout, one block per
  dataset, HR and NDCG at 5/10/20 as rows, models as columns grouped by family, DiffRec's relative
  difference to the best baseline last; means (x100; best bold, second underlined, † where DiffRec
  differs significantly from the best baseline, § where a cell comes from `+dirty` code), standard
  deviations in a companion table, parameters and timings in a cost table; an unmasked and a
  history-masked version, each headed by the protocol card read from the records; and the models
  at one width (main cells and the width control's `hidden=W` cells, `width_tests`);
- OUT/tables/<suite>_significance.csv (every test), <suite>_ablations.md (every ablation cell);
- OUT/figures/<suite>/*.png and *.pdf (benchmark.figures): NDCG@10 vs diffusion steps per sampler,
  target vs sequence noising, quality vs inference cost, validation curves (main cells, and each
  ablation training beside its main cell, unmasked and masked), and per-model training
  diagnostics (whatever extra numbers the records' curves hold: VAE active units, discriminator accuracy);
- with --pdf, OUT/tables/<suite>.pdf: the protocol card, every table and every figure (needs pdflatex);
and OUT/README.md, which summarises the suites, links the figures and lists missing cells, under
the hand-written discussion OUT/discussion.md when there is one (the only file in OUT written by hand).
A record belongs to every packaged suite that holds its cell as the suite is defined now.

Significance: two-sided Wilcoxon signed-rank test over users of the per-user metric (averaged over
the seeds both models share), DiffRec vs the baseline with the best mean in that column, Holm
correction over all comparisons of one table, alpha 0.05.
"""
from __future__ import annotations

import argparse
import glob
import re
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from benchmark import figures as fig
from benchmark.config import ConfigError
from benchmark.data import DataError
from benchmark.metrics import per_user_metrics
from benchmark.records import RESULTS_DIR, RecordError, atomic_path, default_out, load_records, read_record, tuning_dirs
from benchmark.registry import MODELS
from benchmark.suite import MAIN_TAGS, Suite, committed_suites, load_suite_file, resolve_suite, suite_names
from benchmark.tables import (
    COST_NOTE, DIRTY_NOTE, SUBJECT, TABLE_METRICS, TEX_SIZE, blocks, cost_frame, family, is_subject, latex_cost, latex_escape, latex_means, latex_stds, latex_width, markdown_cost,
    markdown_tables, means_note, pdflatex, INSTALL_HINT, LatexError,
)
from benchmark.train import NOT_TRAINED

ALPHA = 0.05
SPLITS = {"test": "Unmasked (history items stay in the ranking)", "test_masked": "History-masked (the user's earlier items removed from the ranking)"}
SAMPLER_KEYS = {"steps", "sampler", "sampler_steps", "samples"}


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
            # the code that made it had uncommitted changes: nobody can check it out (tables mark it)
            "dirty": str(r.get("environment", {}).get("git_commit", "")).endswith("+dirty"),
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
        # a model with nothing to train ran under the rule but used none of it
        budgets[m] = f"none ({NOT_TRAINED})" if r.get("stopped") == NOT_TRAINED else r["protocol"]["early_stopping"] + (f", time budget {r['config']['train']['time_budget_s']:g}s" if r["config"]["train"].get("time_budget_s") else "")
        t = r.get("tuning") or {}
        trials.setdefault(m, {})[r["dataset"]["name"]] = tuning_phrase(t)
    return [
        ("datasets", "; ".join(datasets.values())),
        ("split", first["split"]),
        ("max_len", distinct(r["protocol"]["max_len"] for r in recs)),
        ("ranking", first["ranking"]),
        ("ties", first["ties"]),
        ("masking", first["masking"]),
        ("selection", distinct(r["protocol"]["selection"] for r in recs)),
        ("losses", "; ".join(losses.values())),
        ("budgets", distinct(f"{m}: {b}" for m, b in budgets.items())),
        ("tuning trials", "; ".join(f"{m}: {tuning_per_dataset(by_dataset)}" for m, by_dataset in trials.items())),
        ("seeds", ", ".join(str(s) for s in sorted({r["seed"] for r in recs}))),
        ("git commit", distinct(r["environment"]["git_commit"] for r in recs)),
        ("environment", distinct(f"{e['device']}, torch {e['packages'].get('torch')}, python {e['python']}" for e in (r["environment"] for r in recs))),
    ]


def tuning_phrase(tuning: dict) -> str:
    """A record's `tuning` in words: "20 trials of at most 40 epochs (study s)", "beauty's ..." when
    the parameters came from another dataset's study, "defaults (untuned)" without one."""
    if not tuning:
        return "defaults (untuned)"
    caps = ([f"{tuning['trial_epochs']} epochs"] if tuning.get("trial_epochs") else []) + ([f"{tuning['trial_time_budget_s']:g} s"] if tuning.get("trial_time_budget_s") else [])
    cap = f" of at most {' and '.join(caps)}" if caps else ""
    owner = f"{tuning['params_of']}'s " if tuning.get("params_of") else ""
    return f"{owner}{tuning['trials']} trials{cap} (study {tuning['study']})"


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
# Figures' points


def cost_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One point per dataset, model, setting and device: mean test seconds per 1,000 users and mean
    test NDCG@10 over the seeds run there. Devices stay apart: a GPU's and a CPU's seconds do not
    average into one cost."""
    keys = ["dataset", "model", "tag", "device"]
    return frame.groupby(keys, sort=True).agg(cost=("test_seconds_per_1k", "mean"), ndcg=("test/NDCG@10", "mean"), seeds=("seed", "nunique")).reset_index()



def sampler_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The ablation rows of DiffRec that set the steps and at most how it samples."""
    return frame[frame.tag.map(lambda t: "steps" in tag_keys(t) and tag_keys(t) <= SAMPLER_KEYS) & frame.model.map(is_subject)]


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


WIDTH_NOTE = (
    "Each diffusion model against the best baseline run at the same width (`hidden`; the best by mean NDCG@10 of that split), "
    "from the main cells and the width control's cells (tag `hidden=W`: every other setting as tuned), on the seeds both have; "
    "p: two-sided Wilcoxon signed-rank over per-user test NDCG@10 (each user's value averaged over those seeds), Holm-corrected "
    "over the table's tests of one split."
)


def width_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The main cells and the width control's cells (tag "hidden=W") of the models that have a width."""
    part = pd.concat([main_frame(frame), frame[frame.tag.map(lambda t: tag_keys(t) == {"hidden"})]])
    return part[part["cfg.hidden"].notna()] if "cfg.hidden" in part else part.iloc[:0]


def width_tests(frame: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """The models at one width: per dataset, width and split, each diffusion model against the best
    baseline run at that width (by mean NDCG@10 of the split), on their common seeds, with the
    Wilcoxon p-value Holm-corrected over the tests of one split. One row per test."""
    part, rows = width_points(frame), []
    for (dataset, hidden), g in part.groupby(["dataset", "cfg.hidden"], sort=True) if not part.empty else []:
        baselines = g[g.model.map(lambda m: family(m) != "diffusion")]
        if baselines.empty:
            continue
        for model in sorted(m for m in set(g.model) if family(m) == "diffusion"):
            for split in SPLITS:
                best = baselines.groupby("model")[f"{split}/NDCG@10"].mean().idxmax()
                mine, theirs = g[g.model == model], g[g.model == best]
                seeds = sorted(set(mine.seed) & set(theirs.seed))
                mine, theirs = mine[mine.seed.isin(seeds)], theirs[theirs.seed.isin(seeds)]
                ranks = "test_ranks" if split == "test" else "test_ranks_masked"
                rows.append({
                    "dataset": dataset, "hidden": int(hidden), "model": model, "split": split, "baseline": best, "seeds": len(seeds),
                    "mean": mine[f"{split}/NDCG@10"].mean(), "std": mine[f"{split}/NDCG@10"].std(), "base_mean": theirs[f"{split}/NDCG@10"].mean(), "base_std": theirs[f"{split}/NDCG@10"].std(),
                    "p": paired_pvalue(seed_mean_per_user(records, mine.i, ranks), seed_mean_per_user(records, theirs.i, ranks)) if seeds else float("nan"),
                    "devices": frozenset(mine.device) | frozenset(theirs.device),  # one comparison, one device: shown, never averaged away
                })
    tests = pd.DataFrame(rows, columns=["dataset", "hidden", "model", "split", "baseline", "seeds", "mean", "std", "base_mean", "base_std", "p", "devices", "p_holm"])
    for split in SPLITS:
        done = (tests.split == split) & tests.p.notna()
        if done.any():
            tests.loc[done, "p_holm"] = holm(tests.p[done].values)
    return tests


def width_markdown(tests: pd.DataFrame) -> str:
    """`width_tests` as one row per dataset, width and model, unmasked and masked side by side."""
    rows = []
    for (dataset, hidden, model), g in tests.groupby(["dataset", "hidden", "model"], sort=False):
        row = {"dataset": dataset, "hidden": hidden, "model": model}
        for t in g.itertuples():
            label = "" if t.split == "test" else "masked "
            row[f"{label}NDCG@10"] = mean_std(t.mean, t.std, t.seeds) if t.seeds else "–"
            row[f"{label}baseline (seeds)"] = f"{t.baseline} ({t.seeds})"
            row[f"{label}baseline NDCG@10"] = mean_std(t.base_mean, t.base_std, t.seeds) if t.seeds else "–"
            row[f"{label}p (Holm)"] = f"{t.p_holm:.2g}" if pd.notna(t.p_holm) else "–"
        row["device"] = ", ".join(sorted(frozenset().union(*g.devices)))
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False) if rows else ""


def natural_key(text: str) -> list:
    """"steps=200" after "steps=50": digit runs compare as numbers."""
    return [(0, float(part), "") if part[:1].isdigit() else (1, 0.0, part) for part in re.split(r"(\d+(?:\.\d+)?)", text) if part]


def resolved_suite(suite: str, out: Path) -> Suite | None:
    """A packaged suite as it is defined now, with OUT's tuned parameters (None if it is not a
    packaged suite or cannot be resolved here)."""
    if suite not in suite_names():
        return None
    try:
        return resolve_suite(*load_suite_file(suite), tuning_dir=tuning_dirs(out))
    except (ConfigError, DataError):
        return None


AWAITING = "awaiting its study"
AWAITING_NOTE = (
    f"\"{AWAITING}\": the suite wants this model tuned and its study is not exported yet; these cells train at the "
    "study's best parameters once it is (`benchmark.run` refuses them until then), not at the defaults their tag names now."
)


def missing_cells(defined: Suite | None, done: set[str]) -> dict[str, list[int]] | None:
    """The suite's cells without a record: {"dataset / model / tag": [seeds]} in suite order, the
    pairs whose study is awaited marked so (None when the suite's cells are unknown)."""
    if defined is None:
        return None
    awaiting = set(defined.awaiting_studies(defined.cells))
    missing: dict[str, list[int]] = {}
    for c in defined.cells:
        if c.key not in done:
            note = f" ({AWAITING})" if f"{c.dataset}/{c.model}" in awaiting else ""
            missing.setdefault(f"{c.dataset} / {c.model} / {c.tag}{note}", []).append(c.seed)
    return missing


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def tex_caption(suite: str, split_title: str, note: str, see: str = "") -> str:
    """A LaTeX caption from plain text; `see` (a label) adds a reference to the companion table."""
    head = latex_escape(f"Suite {suite}, {split_title.split(' (')[0].lower()}")
    return head + (rf" (standard deviations: Table~\ref{{{see}}})" if see else "") + ". " + latex_escape(note.replace("**bold**", "bold").replace("<ins>underlined</ins>", "underlined"))


def suite_report(suite: str, records: list[dict], out: Path, draw: bool = True) -> dict:
    """Writes one suite's tables (and figures if `draw`); returns what the README and the PDF need."""
    defined = resolved_suite(suite, out)
    frame = suite_frame(suite, records, None if defined is None else {c.key for c in defined.cells})
    if frame.empty:
        return {"suite": suite, "tables": [], "figures": [], "records": 0, "main": [], "missing": missing_cells(defined, set()), "card": [], "tex": ""}
    main = main_frame(frame)
    tables, figures = out / "tables", out / "figures" / suite
    md_sections, tex_sections, sig_frames, card = [], [], [], []
    for split, title in SPLITS.items():
        if main.empty:
            break
        tests = significance(main, records, split)
        sig_frames.append(tests.assign(split=split))
        bs, alone = blocks(main, split, tests)
        if not bs:  # every dataset has one model: no table, so no card, legend or cost either
            md_sections.append(f"## {title}\n\n{markdown_tables(bs, alone)}\n")
            continue
        card = protocol_card([records[i] for i in main.i])
        note = means_note(int(tests.p_holm.notna().sum()) if not tests.empty else 0, ALPHA)
        md_sections.append(f"## {title}\n\nProtocol card:\n\n{card_markdown(card)}\n\n{note}\n\n{markdown_tables(bs, alone)}\n")
        label = f"tab:{suite}-{split}"
        std_note = f"Test metrics ×100, standard deviation over seeds (a model with one seed has none). {DIRTY_NOTE}."
        tex_sections.append(
            f"% Protocol card ({title})\n{card_latex(card)}\n"
            + latex_means(bs, tex_caption(suite, title, note, see=f"{label}-std"), label) + "\n\n"
            + latex_stds(bs, tex_caption(suite, title, std_note), f"{label}-std") + "\n"
        )
    summary = {"suite": suite, "tables": [], "figures": [], "records": len(frame), "main": md_sections, "card": card, "tex": ""}
    widths = width_tests(frame, records)
    if md_sections and not widths.empty:
        md_sections.append(f"## At one width\n\n{WIDTH_NOTE}\n\n{width_markdown(widths)}\n")
        tex_sections.append(latex_width(widths, latex_escape(f"Suite {suite}, the models at one width: test NDCG@10 ×100, mean ± std over the seeds of each comparison. " + WIDTH_NOTE.replace("`", "")), f"tab:{suite}-width") + "\n")
    if tex_sections:  # some table compares models: their cost beside it
        cost = cost_frame(main[main.dataset.isin(main.groupby("dataset").model.nunique().loc[lambda n: n > 1].index)])  # as the main tables
        md_sections.append(f"## Cost\n\n{COST_NOTE}\n\n{markdown_cost(cost)}\n")
        tex_sections.append(latex_cost(cost, latex_escape(f"Suite {suite}: parameters, training and test seconds (mean over seeds). " + COST_NOTE.replace("test s / 1k users", "test s/1k").replace("the devices column names where the seeds ran", f"tables/{suite}.md names the devices")), f"tab:{suite}-cost") + "\n")
        summary["tex"] = "\n".join(tex_sections)
    if md_sections:
        summary["tables"].append(write_text(tables / f"{suite}.md", f"# Suite `{suite}`: test metrics\n\n" + "\n".join(md_sections)))
    if summary["tex"]:
        summary["tables"].append(write_text(tables / f"{suite}.tex", TEX_HEADER + summary["tex"]))
    sig = pd.concat(sig_frames)  # one frame per split, empty where no dataset holds two models
    if not sig.empty:
        summary["tables"].append(write_text(tables / f"{suite}_significance.csv", sig.to_csv(index=False)))
    ablations = ablation_markdown(frame, records)
    if ablations:
        noise = noise_markdown(frame, records)
        noise = f"\n## Target-only against whole-sequence noising\n\n{NOISE_NOTE}\n\n{noise}\n" if noise else ""
        summary["tables"].append(write_text(tables / f"{suite}_ablations.md", f"# Suite `{suite}`: ablation cells (test metrics, mean ± std over seeds)\n\n{ABLATION_NOTE}\n\n{ablations}\n{noise}"))
    if draw:
        summary["figures"] = fig.figure_steps(sampler_points(frame), figures) + fig.figure_noise(noise_points(frame), figures) + fig.figure_cost(cost_points(frame), figures)
        summary["figures"] += fig.figure_ablation_curves(frame, records, figures)
        if not main.empty:
            summary["figures"] += fig.figure_curves(main, records, figures) + fig.figure_diagnostics(main, records, figures)
    if (tables / f"{suite}.pdf").exists():  # written by --pdf only; linked while it exists
        summary["tables"].append(tables / f"{suite}.pdf")
    summary["missing"] = missing_cells(defined, {records[i]["key"] for i in frame.i})
    return summary


TEX_HEADER = (
    "% Generated by python -m benchmark.report; needs \\usepackage{booktabs}. Every table fits a two-column paper's table* at\n"
    "% \\small (the default below) and a one-column page at \\footnotesize: \\newcommand{\\benchtablesize}{\\footnotesize} before \\input.\n"
    f"{TEX_SIZE}\n"
)


DISCUSSION = "discussion.md"  # hand-written findings, copied into OUT/README.md above the generated part
CITED_RECORD = re.compile(r"_s\d+__([0-9a-f]{10})\b")  # a record's file name ends in __s<seed>__<key>.json


def missing_citations(text: str, runs: Path) -> list[str]:
    """The record keys that a hand-written text cites (`..._s<seed>__<key>`, as file names end) with
    no record in `runs`: a sentence resting on them rests on nothing that the folder holds."""
    held = {p.stem.rsplit("__", 1)[-1] for p in Path(runs).glob("*.json")}
    return sorted(set(CITED_RECORD.findall(text)) - held)


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
        if s["suite"].endswith(SUPERSEDED):
            lines += [
                f"These records were made under an earlier definition of the suite `{s['suite'].removesuffix(SUPERSEDED)}` (its stopping rule, tuning "
                "budget or defaults changed since), so they are not its cells now; each record's protocol card says what it ran under. "
                "They are kept as evidence, never mixed with the current cells.",
                "",
            ]
        for section in s["main"]:
            lines += [section.replace("## ", "### ", 1), ""]
        pngs = sorted((out / "figures" / s["suite"]).glob("*.png"))
        if pngs:
            lines += ["Figures:", ""]
            for p in pngs:
                rel = p.relative_to(out).as_posix()
                lines += [f"- [{p.stem}]({rel}) ([pdf]({rel[:-4]}.pdf))", "", f"  ![{p.stem}]({rel})", ""]
        if s["suite"].endswith(SUPERSEDED):
            continue
        if s["missing"] is None:
            lines += ["Missing cells: unknown (not a packaged suite, or it cannot be resolved here).", ""]
        elif s["missing"]:
            count = sum(map(len, s["missing"].values()))
            lines += [f"Missing cells ({count}, relative to the suite file as it is now):", ""]
            lines += [f"- {m}: seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}" for m, seeds in s["missing"].items()] + [""]
            if any(AWAITING in m for m in s["missing"]):
                lines += [AWAITING_NOTE, ""]
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
                record = read_record(path)
            except RecordError as exc:
                raise ValueError(str(exc)) from None
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


def breakable(tex: str) -> str:
    """Hashes (sha256, commits) may break every 16 characters: a line cannot hold two of them."""
    return re.sub(r"[0-9a-f]{17,}", lambda m: r"\allowbreak{}".join(re.findall(".{1,16}", m.group())), tex)


def pdf_document(summary: dict, out: Path) -> str:
    """One LaTeX document with a suite's protocol card, every table of its .tex and every figure."""
    card = "\n".join(rf"\item[{latex_escape(k)}] {breakable(latex_escape(v))}" for k, v in summary["card"])
    figures = "\n".join(
        rf"\begin{{figure}}[p]\centering\includegraphics[width=\textwidth,height=0.85\textheight,keepaspectratio]{{{p.name}}}"
        rf"\caption{{\texttt{{{latex_escape(p.relative_to(out).as_posix())}}}}}\end{{figure}}"
        for p in summary["figures"] if p.suffix == ".pdf"
    )
    return "\n".join([
        r"\documentclass[10pt]{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs,graphicx}", r"\pdftrailerid{}", TEX_SIZE,
        rf"\title{{Suite \texttt{{{latex_escape(summary['suite'])}}}: protocol, tables and figures}}",
        rf"\author{{Generated by \texttt{{python -m benchmark.report --pdf}} from {summary['records']} run records}}", r"\date{}",
        r"\begin{document}", r"\maketitle", r"\section*{Protocol card}", r"{\sloppy\small\begin{description}", card, r"\end{description}}",
        r"The ablation cells are in \texttt{" + latex_escape(f"tables/{summary['suite']}_ablations.md") + "}.",
        r"\clearpage", summary["tex"], r"\clearpage", figures, r"\end{document}",
    ])


def write_pdf(summary: dict, out: Path) -> Path:
    """OUT/tables/<suite>.pdf: the card, tables and figures in one file. Raises LatexError."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for p in summary["figures"]:
            shutil.copy(p, folder / p.name)
        pdf = pdflatex(pdf_document(summary, out), folder, runs=2)
        path = out / "tables" / f"{summary['suite']}.pdf"
        with atomic_path(path) as target:
            shutil.copy(pdf, target)
    return path


def remove_stale(suite: str, out: Path, *, keep: set[Path], pdf: bool) -> None:
    """After a report succeeded: removes what an earlier one generated for `suite` and this one did
    not write (figures/<suite>/*, tables/<suite>.md|.tex, tables/<suite>_*; its PDF when PDFs were
    made), so nothing stale stays beside the new output. A report that fails removes nothing."""
    tables = out / "tables"
    candidates = [*(out / "figures" / suite).glob("*"), *tables.glob(f"{glob.escape(suite)}_*"), tables / f"{suite}.md", tables / f"{suite}.tex"] + ([tables / f"{suite}.pdf"] if pdf else [])
    for path in candidates:
        if path.is_file() and path not in keep:
            path.unlink()


SUPERSEDED = "-superseded"  # the report's name for a packaged suite's records that are no longer its cells


def with_superseded(records: list[dict], found: list[str], out: Path) -> tuple[list[dict], list[str]]:
    """A packaged suite's records whose cells it no longer holds (its protocol changed since) are
    reported apart, as suite "<name>-superseded", after the suite itself: they stay evidence of what
    was measured, and never mix with the current protocol's cells. -> (records with relabelled
    copies appended, suites to report)."""
    extra, names = [], []
    for suite in found:
        defined = resolved_suite(suite, out)
        if defined is None:
            continue
        keys = {c.key for c in defined.cells}
        old = [{**r, "suite": suite + SUPERSEDED} for r in records if r.get("suite") == suite and r["key"] not in keys]
        if old:
            extra += old
            names.append(suite + SUPERSEDED)
    return records + extra, found + names


def write_report(out: str | Path, suites: list[str] | None = None, *, pdf: bool = False) -> list[Path]:
    """Tables and figures of `suites` (default: every suite with records) and OUT/README.md; with
    `pdf`, each of those suites' tables and figures in one PDF too (needs pdflatex; LatexError)."""
    out = Path(out)
    records = load_records(out / "runs") if (out / "runs").is_dir() else []
    if not records:
        return []
    if (out / DISCUSSION).exists():
        missing = missing_citations((out / DISCUSSION).read_text(), out / "runs")
        if missing:
            raise RecordError(f"{out / DISCUSSION}: cites records that {out / 'runs'} does not hold (keys {', '.join(missing)}); commit them or drop the sentences")
    found = list(dict.fromkeys(r.get("suite", "") for r in records))
    if out.resolve() == RESULTS_DIR.resolve():  # the committed folder reports the committed suites only
        left_out = [s for s in found if s not in committed_suites()]
        if left_out:
            print(f"{out}: records of suites that are not committed ({', '.join(left_out)}) are left out of the report; move them to runs-local/", file=sys.stderr)
        found = [s for s in found if s not in left_out]
    records, found = with_superseded(records, found, out)
    drawn = [s for s in found if suites is None or s in suites]
    # The README covers every suite with records; suites not asked for keep their figures as they are.
    summaries = [suite_report(s, records, out, draw=s in drawn) for s in found]
    paths = [p for s in summaries if s["suite"] in drawn for p in s["tables"] + s["figures"] if p != out / "tables" / f"{s['suite']}.pdf"]
    if pdf:
        paths += [write_pdf(s, out) for s in summaries if s["suite"] in drawn and s["tex"]]
    for s in drawn:  # before the README, which links the figures it finds
        remove_stale(s, out, keep=set(paths), pdf=pdf)
    paths.append(write_text(out / "README.md", readme(summaries, out)))
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="results folder holding runs/ (default: runs-local/SUITE/ for one --suite that is not committed, else results/)")
    p.add_argument("--suite", nargs="+", help="only these suites' tables and figures (default: all with records)")
    p.add_argument("--compare", nargs=2, metavar=("GLOB_A", "GLOB_B"), help="instead of the report, compare two sets of records, e.g. 'beauty__diffrec__tuned__s*' 'beauty__sasrec-ce__tuned__s*'")
    p.add_argument("--pdf", action="store_true", help="also one PDF per suite (OUT/tables/<suite>.pdf): protocol card, every table and figure; needs pdflatex")
    args = p.parse_args(argv)
    if args.out is None:  # where benchmark.run writes: a suite that is not committed has a folder of its own
        local = args.suite and len(args.suite) == 1 and args.suite[0] not in committed_suites()
        args.out = str(default_out(args.suite[0], committed=False) if local else RESULTS_DIR)
    if args.compare:
        try:
            print(compare(args.out, *args.compare))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.pdf and shutil.which("pdflatex") is None:
        print(f"error: --pdf: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        paths = write_report(args.out, args.suite, pdf=args.pdf)
    except LatexError as exc:
        print(f"error: --pdf: {exc}", file=sys.stderr)
        return 2
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not paths:
        print(f"error: no run records under {Path(args.out) / 'runs'}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
