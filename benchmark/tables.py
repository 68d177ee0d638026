"""The paper-layout tables, as the DiffRec and DiffuRec papers print them: one block per dataset,
metrics as rows, models as columns grouped by family, and a last column with DiffRec's relative
difference to the best baseline and its significance mark. Means in the main table (x100), standard
deviations in a companion table, parameters and training time in a cost table; each in Markdown
(one table per dataset) and booktabs LaTeX (no \\resizebox: it fits a two-column paper's `table*`
at \\small and a one-column page at \\footnotesize, which tests/test_report.py checks by compiling).

Marks: best bold, second underlined, † significant, § built from at least one record whose code
commit had uncommitted changes (`+dirty`: nobody can check out the code that made it).
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TABLE_METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")
SUBJECT = "diffrec"  # the model whose significance against the best baseline is tested
# Column groups, as the papers group their baselines; a model not named here goes to "other".
FAMILIES = {
    "classic": ("pop", "sasrec-bce", "sasrec-ce", "sasrec-ss"),
    "VAE": ("svae", "contrastvae"),
    "GAN": ("mfgan",),
    "diffusion": ("diffurec", "diffrec", "diffrec-paper"),
    "other": (),
}
SCALE = 100  # metrics print as percentages with two decimals: "2.87" for 0.0287
DIRTY = "§"
SIGNIFICANT = "†"
DIRTY_NOTE = f"{DIRTY} built from at least one record whose code commit had uncommitted changes (`+dirty`): the code that made it cannot be checked out"
TEX_SIZE = r"\providecommand{\benchtablesize}{\small}"  # \footnotesize on a one-column page: define \benchtablesize before \input


def is_subject(model: str) -> bool:
    return model == SUBJECT or model.startswith(SUBJECT + "-")


def family(model: str) -> str:
    for name, members in FAMILIES.items():
        if model in members:
            return name
    return "diffusion" if is_subject(model) else "other"


def column_groups(models) -> list[tuple[str, list[str]]]:
    """[(family, models)] in FAMILIES order; members in the order FAMILIES names them, others by
    name, DiffRec's variants after DiffRec."""
    groups = []
    for name, members in FAMILIES.items():
        here = sorted((m for m in set(models) if family(m) == name), key=lambda m: (m not in members, members.index(m) if m in members else 0, m))
        if here:
            groups.append((name, here))
    return groups


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    seeds: int
    dirty: bool


@dataclass(frozen=True)
class Block:
    """One dataset of one table: cells[(model, metric)], and the subject's relative difference to the
    best baseline per metric: gains[(subject, metric)] = (percent, significant, dirty)."""

    dataset: str
    models: list[str]
    cells: dict
    gains: dict
    seeds: dict  # model -> seed count


def blocks(main: pd.DataFrame, split: str, tests: pd.DataFrame) -> tuple[list[Block], list[str]]:
    """-> (one Block per dataset with at least two models, the datasets left out for having one)."""
    out, alone = [], []
    for dataset, part in main.groupby("dataset", sort=False):
        models = [m for _, ms in column_groups(part.model) for m in ms]
        if len(models) < 2:
            alone.append(dataset)
            continue
        g = part.groupby("model")
        dirty = g.dirty.any()
        cells = {}
        for metric in TABLE_METRICS:
            col = f"{split}/{metric}"
            for model, mean, std, n in zip(g[col].mean().index, g[col].mean(), g[col].std(), g[col].size()):
                cells[(model, metric)] = Cell(float(mean), float(std), int(n), bool(dirty[model]))
        gains = {}
        for subject in (m for m in models if is_subject(m)):
            for metric in TABLE_METRICS:
                hit = tests[(tests.dataset == dataset) & (tests.metric == metric) & (tests.model == subject)] if not tests.empty else tests
                if hit.empty:
                    continue
                best = hit.baseline.iloc[0]
                mine, theirs = cells[(subject, metric)].mean, cells[(best, metric)].mean
                percent = (mine - theirs) / theirs * 100 if theirs else float("nan")
                gains[(subject, metric)] = (percent, bool(hit.significant.iloc[0]), bool(dirty[subject] or dirty[best]))
        out.append(Block(str(dataset), models, cells, gains, {m: int(part[part.model == m].seed.nunique()) for m in models}))
    return out, alone


def table_models(bs: list[Block]) -> list[str]:
    return [m for _, ms in column_groups({m for b in bs for m in b.models}) for m in ms]


def subjects(bs: list[Block]) -> list[str]:
    return [m for m in table_models(bs) if any(s == m for b in bs for s, _ in b.gains)]


def ranking(block: Block, metric: str) -> list[str]:
    """Models by mean of one metric, best first (stable for ties)."""
    means = {m: block.cells[(m, metric)].mean for m in block.models if (m, metric) in block.cells}
    return sorted((m for m in means if not math.isnan(means[m])), key=lambda m: -means[m])


def seed_note(block: Block) -> str:
    """"3 seeds per model; pop 5, sasrec-ce 4": the common count, and the exceptions."""
    common = Counter(block.seeds.values()).most_common(1)[0][0]
    rest = [f"{m} {n}" for m, n in block.seeds.items() if n != common]
    return f"{common} seed{'s' * (common != 1)} per model" + (f"; {', '.join(rest)}" if rest else "")


def number(value: float, decimals: int = 2) -> str:
    return "–" if math.isnan(value) else f"{value * SCALE:.{decimals}f}"


def gain_text(gain) -> tuple[str, bool, bool]:
    percent, significant, dirty = gain
    return ("–" if math.isnan(percent) else f"{percent:+.1f}%"), significant, dirty


# ---------------------------------------------------------------------------------------------
# Markdown


def md_marked(text: str, *, style: str = "", significant: bool = False, dirty: bool = False) -> str:
    text = text + (f" {SIGNIFICANT}" if significant else "") + (f" {DIRTY}" if dirty else "")
    return f"**{text}**" if style == "best" else f"<ins>{text}</ins>" if style == "second" else text


def md_header(models: list[str], extra: list[str]) -> list[str]:
    header = ["Metric"] + [f"{m}<br><sub>{family(m)}</sub>" for m in models] + extra
    return ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]


def means_row(block: Block, metric: str, models, subs, marked, missing: str) -> list[str]:
    """One metric's cells of a means table, formatted by `marked` (Markdown or LaTeX): each model's
    mean (best and second marked), then each subject's relative difference to the best baseline."""
    order = ranking(block, metric)
    row = []
    for m in models:
        cell = block.cells.get((m, metric))
        style = "best" if order[:1] == [m] else "second" if order[1:2] == [m] else ""
        row.append(missing if cell is None else marked(number(cell.mean), style=style, dirty=cell.dirty))
    for s in subs:
        text, significant, dirty = gain_text(block.gains[(s, metric)]) if (s, metric) in block.gains else (missing, False, False)
        row.append(marked(text, significant=significant, dirty=dirty))
    return row


def markdown_means(block: Block) -> str:
    subs = [s for s in block.models if any(k[0] == s for k in block.gains)]
    extra = ["Improv." if s == SUBJECT else f"Improv. ({s})" for s in subs]
    lines = md_header(block.models, extra)
    for metric in TABLE_METRICS:
        lines.append("| " + " | ".join([metric] + means_row(block, metric, block.models, subs, md_marked, "–")) + " |")
    return "\n".join(lines)


def markdown_stds(block: Block) -> str:
    lines = md_header(block.models, [])
    for metric in TABLE_METRICS:
        row = [metric]
        for m in block.models:
            cell = block.cells.get((m, metric))
            row.append("–" if cell is None or cell.seeds < 2 else md_marked(number(cell.std), dirty=cell.dirty))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_tables(bs: list[Block], alone: list[str]) -> str:
    """One means table per dataset, each followed by its standard deviations (folded)."""
    parts = []
    for b in bs:
        parts += [
            f"**{b.dataset}** ({seed_note(b)})",
            "",
            markdown_means(b),
            "",
            f"<details><summary>{b.dataset}: standard deviation over seeds (×{SCALE})</summary>",
            "",
            markdown_stds(b),
            "",
            "</details>",
            "",
        ]
    if alone:
        parts += [f"Left out (one model only, nothing to compare): {', '.join(alone)}.", ""]
    return "\n".join(parts).rstrip()


def means_note(n_tests: int, alpha: float) -> str:
    return (
        f"Test metrics ×{SCALE}, mean over seeds; best **bold**, second <ins>underlined</ins>. Improv.: {SUBJECT}'s relative difference to the "
        f"best baseline of the row; {SIGNIFICANT} = significant (two-sided Wilcoxon signed-rank over per-user values, Holm-corrected over the "
        f"{n_tests} comparisons of this table, α = {alpha}). {DIRTY_NOTE}."
    )


# ---------------------------------------------------------------------------------------------
# Cost


def cost_frame(main: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset and model: parameters, mean training and test time, seeds, devices."""
    g = main.groupby(["dataset", "model"], sort=False)
    cost = g.agg(params=("params", "mean"), train=("train_seconds", "mean"), test=("test_seconds_per_1k", "mean"), seeds=("seed", "nunique"), dirty=("dirty", "any"))
    cost["devices"] = g.device.agg(lambda d: ", ".join(sorted(set(d))))
    return cost.reset_index()


def fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else f"{n:.0f}"


COST_NOTE = (
    "Params: parameter count; train s: training wall time including validation; test s / 1k users: the test pass (scoring and "
    "ranking) per 1,000 users; means over seeds. Timings of different devices do not compare: the devices column names where the "
    f"seeds ran. {DIRTY_NOTE}."
)


def markdown_cost(cost: pd.DataFrame) -> str:
    parts = []
    for dataset, part in cost.groupby("dataset", sort=False):
        order = [m for _, ms in column_groups(part.model) for m in ms]
        rows = part.set_index("model").loc[order]
        lines = ["| Model | Family | Params | Train s | Test s / 1k users | Seeds | Devices |", "|:---|:---|---:|---:|---:|---:|:---|"]
        for m, r in rows.iterrows():
            mark = f" {DIRTY}" if r.dirty else ""
            lines.append(f"| {m} | {family(m)} | {fmt_params(r.params)} | {r.train:.0f}{mark} | {r.test:.3f}{mark} | {r.seeds} | {r.devices} |")
        parts += [f"**{dataset}**", "", "\n".join(lines), ""]
    return "\n".join(parts).rstrip()


# ---------------------------------------------------------------------------------------------
# LaTeX

TEX_REPLACE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "±": r"$\pm$", "†": r"$^\dagger$", "§": r"$^\S$", "α": r"$\alpha$", "×": r"$\times$", "–": "--", "≥": r"$\geq$", "≤": r"$\leq$", "→": r"$\rightarrow$", "`": ""}


def latex_escape(text: str) -> str:
    return "".join(TEX_REPLACE.get(ch, ch) for ch in text)


def tex_marked(text: str, *, style: str = "", significant: bool = False, dirty: bool = False) -> str:
    text = latex_escape(text)
    if text[:1] in "+-" and text[1:2].isdigit():
        text = f"${text[0]}${text[1:]}"  # a minus sign, not a hyphen
    text = rf"\textbf{{{text}}}" if style == "best" else rf"\underline{{{text}}}" if style == "second" else text
    marks = (r"\dagger" if significant else "") + (r"\S" if dirty else "")
    return text + (f"$^{{{marks}}}$" if marks else "")


def tex_model(model: str) -> str:
    """Header cell: a hyphenated name on two lines, so a column is no wider than its numbers need."""
    head, _, tail = model.partition("-")
    return latex_escape(model) if not tail else rf"\begin{{tabular}}[b]{{@{{}}c@{{}}}}{latex_escape(head)}\\{latex_escape(tail)}\end{{tabular}}"


def tex_header(models: list[str], extra: list[str], first: str = "") -> list[str]:
    groups = column_groups(models)
    spans, rules, col = [first], [], 2
    for name, ms in groups:
        spans.append(rf"\multicolumn{{{len(ms)}}}{{c}}{{{latex_escape(name)}}}")
        rules.append(rf"\cmidrule(lr){{{col}-{col + len(ms) - 1}}}")
        col += len(ms)
    spans += [""] * len(extra)
    return [" & ".join(spans) + r" \\", "".join(rules), " & ".join(["Metric"] + [tex_model(m) for m in models] + extra) + r" \\"]


PANEL_MODELS = 7  # model columns per panel of a LaTeX table: more do not fit a one-column page at footnotesize


def panels(models: list[str]) -> list[list[str]]:
    """The model columns in panels of at most PANEL_MODELS, a family never split, stacked in one
    table (every registered model side by side would be 110 pt too wide for a one-column page)."""
    out: list[list[str]] = [[]]
    for _, ms in column_groups(models):
        if out[-1] and len(out[-1]) + len(ms) > PANEL_MODELS:
            out.append([])
        out[-1] += ms
    return out


def tex_table(parts: list[tuple[list[str], str]], caption: str, label: str) -> str:
    """A full-width table of one or more tabular panels [(body rows, column spec)], stacked."""
    lines = [r"\begin{table*}[tbp]", r"\centering", r"\benchtablesize", r"\setlength{\tabcolsep}{3pt}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\smallskip"]
    for i, (body, columns) in enumerate(parts):
        if i:  # a blank line ends the paragraph, so the next panel stacks below
            lines += ["", r"\medskip"]
        lines += [rf"\begin{{tabular}}{{{columns}}}", r"\toprule", *body, r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines + [r"\end{table*}"])


def latex_means(bs: list[Block], caption: str, label: str) -> str:
    models, subs = table_models(bs), subjects(bs)
    extra = [r"Improv." if s == SUBJECT else rf"Improv.\ {latex_escape(s)}" for s in subs]
    groups, parts = panels(models), []
    for i, ms in enumerate(groups):
        last = i == len(groups) - 1  # the Improv. columns close the last panel
        ex, ss = (extra, subs) if last else ([], [])
        body = tex_header(ms, ex)
        for b in bs:
            body += [r"\midrule", rf"\multicolumn{{{1 + len(ms) + len(ex)}}}{{l}}{{\textit{{{latex_escape(b.dataset)}}} ({latex_escape(seed_note(b))})}} \\"]
            for metric in TABLE_METRICS:
                body.append(" & ".join([latex_escape(metric)] + means_row(b, metric, ms, ss, tex_marked, "--")) + r" \\")
        parts.append((body, "l" + "r" * (len(ms) + len(ex))))
    return tex_table(parts, caption, label)


def latex_stds(bs: list[Block], caption: str, label: str) -> str:
    parts = []
    for ms in panels(table_models(bs)):
        body = tex_header(ms, [])
        for b in bs:
            body += [r"\midrule", rf"\multicolumn{{{1 + len(ms)}}}{{l}}{{\textit{{{latex_escape(b.dataset)}}}}} \\"]
            for metric in TABLE_METRICS:
                row = [latex_escape(metric)]
                for m in ms:
                    cell = b.cells.get((m, metric))
                    row.append("--" if cell is None or cell.seeds < 2 else tex_marked(number(cell.std), dirty=cell.dirty))
                body.append(" & ".join(row) + r" \\")
        parts.append((body, "l" + "r" * len(ms)))
    return tex_table(parts, caption, label)


def latex_cost(cost: pd.DataFrame, caption: str, label: str) -> str:
    datasets = list(dict.fromkeys(cost.dataset))
    models = [m for _, ms in column_groups(cost.model) for m in ms]
    by = cost.set_index(["dataset", "model"])
    body = [
        " & ".join([""] + [rf"\multicolumn{{3}}{{c}}{{{latex_escape(d)}}}" for d in datasets]) + r" \\",
        "".join(rf"\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}" for i in range(len(datasets))),
        " & ".join(["Model"] + ["Params", "Train s", "Test s/1k"] * len(datasets)) + r" \\",
        r"\midrule",
    ]
    for m in models:
        row = [latex_escape(m)]
        for d in datasets:
            if (d, m) in by.index:
                r = by.loc[(d, m)]
                row += [fmt_params(r.params), tex_marked(f"{r.train:.0f}", dirty=r.dirty), tex_marked(f"{r.test:.3f}", dirty=r.dirty)]
            else:
                row += ["--"] * 3
        body.append(" & ".join(row) + r" \\")
    return tex_table([(body, "l" + "r" * (3 * len(datasets)))], caption, label)


def latex_width(tests: pd.DataFrame, caption: str, label: str) -> str:
    """The models at one width (`benchmark.report.width_tests`): per dataset, width and diffusion
    model, its NDCG@10 and the best baseline's at that width (x100, mean ± std over the common
    seeds) with the Holm-corrected p-value; an unmasked and a history-masked panel, stacked."""

    def value(mean: float, std: float, n: int) -> str:
        return "--" if not n else number(mean) + (rf" $\pm$ {number(std)}" if n > 1 else "")

    parts = []
    for split, title in (("test", "Unmasked"), ("test_masked", "History-masked")):
        body = [rf"\multicolumn{{7}}{{l}}{{\textit{{{title}}}}} \\", " & ".join(["Dataset", "Width", "Model", "NDCG@10", "Best baseline (seeds)", "NDCG@10", "$p$ (Holm)"]) + r" \\", r"\midrule"]
        for t in tests[tests.split == split].itertuples():
            p = "--" if pd.isna(t.p_holm) else f"{t.p_holm:.2g}"
            body.append(" & ".join([latex_escape(t.dataset), str(t.hidden), latex_escape(t.model), value(t.mean, t.std, t.seeds), f"{latex_escape(t.baseline)} ({t.seeds})", value(t.base_mean, t.base_std, t.seeds), p]) + r" \\")
        parts.append((body, "lrlrlrr"))
    return tex_table(parts, caption, label)


# ---------------------------------------------------------------------------------------------
# Compiling

INSTALL_HINT = "pdflatex not found: install it (Debian/Ubuntu: apt-get install texlive-latex-recommended)"


class LatexError(RuntimeError):
    """pdflatex failed, or reported an overfull box; the message names the first problem."""


def pdflatex(source: str, folder: Path, *, runs: int = 1, overfull_ok: bool = False) -> Path:
    """Compiles `source` as folder/doc.tex (files it includes are found in `folder`) -> the PDF.
    Raises LatexError on any error or, unless `overfull_ok`, any overfull box (a table too wide for
    its page), naming it. The PDF carries no date, so the same source gives the same bytes."""
    exe = shutil.which("pdflatex")
    if exe is None:
        raise LatexError(INSTALL_HINT)
    (folder / "doc.tex").write_text(source)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
    for _ in range(runs):  # a second run resolves \ref
        done = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder, env=env, capture_output=True, text=True, errors="replace")
    log = (folder / "doc.log").read_text(errors="replace") if (folder / "doc.log").exists() else done.stdout
    problems = [line for line in log.splitlines() if line.startswith("!") or (not overfull_ok and line.startswith("Overfull \\hbox"))]
    if done.returncode != 0 or problems:
        raise LatexError(f"pdflatex {folder / 'doc.tex'}: {problems[0] if problems else f'exit code {done.returncode}'}")
    return folder / "doc.pdf"
