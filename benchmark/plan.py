"""What a suite will do, and roughly what it costs, before anything trains:
`python -m benchmark.run --suite NAME --plan [--json]`.

The work still to run is the cells without a record (`benchmark.run.is_done`), split into main and
ablation cells, and, for a suite with tuned parameters, the tuning trials its studies still lack
(of a study's budget, the trials the journal `OUT/tuning/optuna.journal` counts, else those of its
exported best.json). The estimate
comes from the finished records in OUT/runs of the same (dataset, model) on the same device kind
(a device name starting with "cpu" is a CPU, any other a GPU), each kind kept apart:
- a training costs the median seconds per epoch times the median epochs run of those records, or
  the suite's minimum epochs (`min_epochs`) where that is more (a record that loaded another cell's
  checkpoint carries that training's timings and is left out);
- every cell costs the median scoring time (validation and test) on top; cells sharing a training
  key (inference ablation points, selection rules) count one training, and none when the model each
  of them scores is already in OUT/checkpoints (then they only score);
- a trial costs a training of at most [tune] trial_epochs epochs, capped by the suite's
  trial_time_budget_s (or that budget alone when there is no record), without the test scoring and
  without the pruner's savings (an upper bound); its epochs cost the median seconds per epoch of the
  study's own completed trials on that device kind where the journal has some (their widths and
  depths are the search space's, not the records' defaults), else the records'.
A suite that tunes first (`[tune] auto`) resolves its cells again with the tuned parameters, so
cells counted before its studies finish may get other keys; the counts stay the same, except the
width control's cells (`[width_control]`), which exist only once the studies have chosen widths.
Nothing is written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from tabulate import tabulate

from benchmark.records import device_kind, load_records
from benchmark.registry import has_parameters
from benchmark.run import is_done
from benchmark.suite import MAIN_TAGS, Cell, Suite, tuning_study

KINDS = ("cpu", "gpu")


@dataclass(frozen=True)
class Profile:
    """Medians of the finished records of one (dataset, model) on one device kind."""

    seconds_per_epoch: float | None  # None: every record reused another's training
    epochs: float | None
    eval_seconds: float  # validation + test scoring of one cell
    records: int


def profiles(records: list[dict]) -> dict[tuple[str, str, str], Profile]:
    """{(dataset, model, device kind): Profile} of run records (parsed JSON)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"]["name"], r["model"], device_kind(r["environment"]["device"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        trained = [r for r in rs if not r.get("training", {}).get("reused")]
        t = [r["timings"] for r in rs]
        out[key] = Profile(
            seconds_per_epoch=median(r["timings"]["seconds_per_epoch"] for r in trained) if trained else None,
            epochs=median(r["epochs_run"] for r in trained) if trained else None,
            eval_seconds=median(x.get("eval_seconds_valid", 0.0) + x.get("eval_seconds_test", 0.0) for x in t),
            records=len(rs),
        )
    return out


def journal_trials(out: Path, study: str) -> list | None:
    """The trials of `study` that use its budget, from OUT's journal; None without a journal or
    without that study in it. Only read: a missing journal is not created."""
    journal = Path(out) / "tuning" / "optuna.journal"
    if not journal.exists():
        return None
    import optuna

    from benchmark.studies import counted_trials, make_storage

    try:
        return counted_trials(optuna.load_study(study_name=study, storage=make_storage(str(journal))), 10**9)
    except KeyError:  # no such study in the journal (yet)
        return None


def trials_done(out: Path, study: str) -> int:
    """Trials of `study` that use its budget: from the journal when it holds the study, else from
    the exported best.json, else 0."""
    trials = journal_trials(out, study)
    if trials is not None:
        return len(trials)
    best = Path(out) / "tuning" / study / "best.json"
    if best.exists():
        return int(json.loads(best.read_text()).get("trials", 0))
    return 0


def trial_epoch_seconds(out: Path, study: str) -> dict[str, float]:
    """{device kind: median seconds per epoch} of the study's completed trials that name their
    device (`benchmark.tune` records it), each trial's training seconds over its epochs."""
    by_kind: dict[str, list[float]] = {}
    for t in journal_trials(out, study) or []:
        a = t.user_attrs
        if t.state.name == "COMPLETE" and a.get("device") and a.get("epochs_run") and a.get("train_seconds") is not None:
            by_kind.setdefault(device_kind(a["device"]), []).append(a["train_seconds"] / a["epochs_run"])
    return {kind: median(values) for kind, values in by_kind.items()}


@dataclass
class Row:
    """The work still to run for one (dataset, model), and its estimate per device kind."""

    dataset: str
    model: str
    main: int = 0
    ablations: int = 0
    trainings: int = 0
    trials: int = 0
    min_epochs: int = 0  # the suite's minimum epochs for this model
    seconds: dict | None = None  # {kind: seconds, or None when no record of that kind}
    trial_epoch_s: dict | None = None  # {kind: median seconds per epoch of the study's finished trials}


def plan_rows(
    suite: Suite, pending: list[Cell], trials_left: dict[tuple[str, str], int], checkpoints: set[str], profs: dict, trial_budget_s: float = 0.0, trial_epochs: int = 0,
    trial_times: dict | None = None,
) -> list[Row]:
    """One Row per (dataset, model) with work left, in suite order. `pending`: the cells without a
    record; `trials_left`: {(dataset, model): trials still to run}; `checkpoints`: the kept
    trained models (`Cell.checkpoint_key`; their cells only score); `trial_times`: {(dataset, model): {kind:
    seconds per epoch of the study's finished trials}}."""
    rows: dict[tuple[str, str], Row] = {}
    todo = {(c.dataset, c.model) for c in pending}
    for c in [*suite.cells, *suite.tune_cells]:
        if (c.dataset, c.model) not in rows and ((c.dataset, c.model) in todo or trials_left.get((c.dataset, c.model), 0)):
            rows[c.dataset, c.model] = Row(c.dataset, c.model, min_epochs=c.train_config.get("min_epochs", 0))
    for c in pending:
        row = rows[c.dataset, c.model]
        if c.tag in MAIN_TAGS:
            row.main += 1
        else:
            row.ablations += 1
    trainings: dict[tuple[str, str], set] = {}
    for c in pending:
        if c.checkpoint_key not in checkpoints:
            trainings.setdefault((c.dataset, c.model), set()).add(c.training_key)
    for (dataset, model), row in rows.items():
        row.trainings = len(trainings.get((dataset, model), set()))
        row.trials = trials_left.get((dataset, model), 0)
        row.trial_epoch_s = (trial_times or {}).get((dataset, model), {})
        row.seconds = {kind: cost(row, profs.get((dataset, model, kind)), trial_budget_s, trial_epochs, row.trial_epoch_s.get(kind)) for kind in KINDS}
    datasets = list(dict.fromkeys(c.dataset for c in [*suite.cells, *suite.tune_cells]))
    return sorted(rows.values(), key=lambda r: datasets.index(r.dataset))  # by dataset, models in suite order


def cost(row: Row, prof: Profile | None, trial_budget_s: float = 0.0, trial_epochs: int = 0, trial_epoch_s: float | None = None) -> float | None:
    """Seconds of a row's work on one device kind, or None when nothing there tells. A trial's
    epochs cost the study's own finished trials' median seconds per epoch (`trial_epoch_s`) where
    there is one, else the records' (which hold no trial's width or depth)."""
    known = prof is not None and prof.seconds_per_epoch is not None
    epochs = max(prof.epochs, row.min_epochs) if known else None
    if trial_epoch_s is not None and (trial_epochs or known):
        trial = trial_epoch_s * (trial_epochs or epochs)
    elif known:
        trial = prof.seconds_per_epoch * (min(epochs, trial_epochs) if trial_epochs else epochs)
    else:
        trial = None
    if trial_budget_s:
        trial = trial_budget_s if trial is None else min(trial, trial_budget_s)
    if (row.trials and trial is None) or (not known and (row.trainings or row.main or row.ablations)):
        return None
    seconds = row.trials * (trial or 0.0)
    if known:
        seconds += row.trainings * prof.seconds_per_epoch * epochs + (row.main + row.ablations) * prof.eval_seconds
    return seconds


def hours(seconds: float | None) -> str:
    return "no record" if seconds is None else f"{seconds / 3600:.2f}"


def render(suite: Suite, rows: list[Row], out: Path) -> str:
    """The plan as a text table with totals (hours per device kind, over the rows with a record)."""
    head = ["dataset", "model", "main", "ablations", "trainings", "trials", "CPU-h", "GPU-h"]
    table = [[r.dataset, r.model, r.main, r.ablations, r.trainings, r.trials, hours(r.seconds["cpu"]), hours(r.seconds["gpu"])] for r in rows]
    tot = totals(rows)
    table.append(["total", "", tot["main"], tot["ablations"], tot["trainings"], tot["trials"], f"{tot['cpu_hours']:.2f}", f"{tot['gpu_hours']:.2f}"])
    lines = [f"suite {suite.name}: plan from the records in {out / 'runs'} (nothing is run or written)", tabulate(table, head, tablefmt="github", disable_numparse=True)]
    for kind in KINDS:
        if tot[f"{kind}_missing"]:
            lines.append(f"{kind.upper()}-h total: {len(rows) - len(tot[f'{kind}_missing'])} of {len(rows)} rows; the others have no record on a {kind.upper()} to estimate from")
    waiting = [u for u in suite.untuned if u.split("/")[1] in suite.width.get("models", ())]
    if waiting:
        lines.append(f"width control ([width_control]): not counted; its cells exist once the studies have chosen the widths ({len(waiting)} of its dataset/model pairs have none yet)")
    if tot["trials"]:
        lines.append(
            "tuning runs first ([tune] auto): the cells are resolved again with the tuned parameters afterwards"
            if suite.tune.get("auto")
            else f"the trials run with python -m benchmark.tune --suite {suite.name} ([tune] auto = false: benchmark.run does not tune)"
        )
    return "\n".join(lines)


def totals(rows: list[Row]) -> dict:
    tot = {k: sum(getattr(r, k) for r in rows) for k in ("main", "ablations", "trainings", "trials")}
    for kind in KINDS:
        tot[f"{kind}_hours"] = sum(r.seconds[kind] or 0.0 for r in rows) / 3600
        tot[f"{kind}_missing"] = [f"{r.dataset}/{r.model}" for r in rows if r.seconds[kind] is None]
    return tot


def suite_plan(suite: Suite, out: Path, keep=None) -> list[Row]:
    """Reads OUT (records, checkpoints, studies) and plans the suite's remaining work: of the cells
    that `keep(cell)` keeps (`benchmark.run`'s `--only` and `--tags`), and the studies' trials."""
    out = Path(out)
    pending = [c for c in suite.cells if (keep is None or keep(c)) and not is_done(out, c)]
    checkpoints = {p.stem for p in (out / "checkpoints").glob("*.pt")}
    budget = suite.tune.get("trials", 0)
    trials_left, trial_times = {}, {}
    for c in suite.tune_cells if suite.params == "tuned" else ():  # a suite of defaults uses no study
        if not has_parameters(c.model):  # nothing to tune: benchmark.tune skips its study
            continue
        study = tuning_study(c.dataset, c.model, c.key)
        trials_left[c.dataset, c.model] = max(0, budget - trials_done(out, study))
        trial_times[c.dataset, c.model] = trial_epoch_seconds(out, study)
    return plan_rows(
        suite, pending, trials_left, checkpoints, profiles(load_records(out)), suite.tune.get("trial_time_budget_s", 0.0), suite.tune.get("trial_epochs", 0), trial_times
    )


def as_json(suite: Suite, rows: list[Row]) -> str:
    tot = totals(rows)
    return json.dumps({"suite": suite.name, "rows": [vars(r) for r in rows], "totals": tot}, indent=1)
