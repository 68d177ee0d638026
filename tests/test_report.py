"""Reports from run records: Holm correction, paired tests, the paper-layout tables (bold best,
underlined second, significance mark), the protocol card, figures and the generated README."""
import json
import shutil
import warnings
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest

from benchmark import figures, report, tables
from benchmark.metrics import metrics_from_ranks, per_user_metrics
from benchmark.records import PROJECT_ROOT, load_records, write_json_atomic
from benchmark.train import NOT_TRAINED

N_USERS = 200


def test_holm_golden_values():
    np.testing.assert_allclose(report.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(report.holm([0.5, 0.9]), [1.0, 1.0])
    np.testing.assert_allclose(report.holm([0.2]), [0.2])


def test_paired_pvalue():
    a = np.linspace(0, 1, 50)
    assert report.paired_pvalue(a, a) == 1.0
    assert report.paired_pvalue(a + 0.1, a) < 1e-6
    with pytest.raises(ValueError, match="same users"):
        report.paired_pvalue(a, a[:10])


def fake_record(dataset, model, seed, ranks, *, tag="default", config=None, curve=None, suite="demo", eval_seconds=1.0):
    ranks = np.asarray(ranks)
    masked = np.maximum(ranks - 1, 0)
    metrics = metrics_from_ranks(ranks)
    return {
        "key": f"{dataset}__{model}__{tag}__s{seed}__0000000000",
        "suite": suite,
        "tag": tag,
        "dataset": {"name": dataset, "users": 1000, "items": 500, "users_used": len(ranks), "sha256": f"{dataset}-sha"},
        "model": model,
        "model_about": f"{model} about",
        "seed": seed,
        "config": {"model": {"hidden": 16, **(config or {})}, "train": {"epochs": 3, "time_budget_s": 0.0}, "data": {}},
        "tuning": {},
        "protocol": {"split": "leave-one-out", "max_len": 50, "ranking": "full", "ties": "pessimistic", "masking": "both", "selection": "validation NDCG@10", "early_stopping": "patience 2"},
        "environment": {"git_commit": "abc123", "device": "cpu", "packages": {"torch": "2.13"}, "python": "3.11"},
        "finished_at": f"2026-01-01T00:00:0{seed}",
        "params": 12345,
        "timings": {"train_seconds": 10.0 + seed, "eval_seconds_test": eval_seconds},
        "curve": curve or [{"epoch": 1, "loss": 1.0, "valid": {"NDCG@10": 0.1}}, {"epoch": 2, "loss": 0.5, "valid": {"NDCG@10": 0.2}}],
        "metrics": {"valid": metrics, "test": metrics, "valid_masked": metrics_from_ranks(masked), "test_masked": metrics_from_ranks(masked)},
        "per_user": {"test_ranks": ranks.tolist(), "test_ranks_masked": masked.tolist()},
    }


@pytest.fixture
def results(tmp_path):
    """Two datasets, three seeds: on "good" diffrec is clearly best, on "tie" it equals sasrec-ce."""
    rng = np.random.default_rng(0)
    records = []
    for seed in range(3):
        base = rng.integers(0, 60, N_USERS)
        records += [
            fake_record("good", "diffrec", seed, base // 4),
            fake_record("good", "sasrec-ce", seed, base),
            fake_record("good", "pop", seed, base + 30),
            fake_record("tie", "diffrec", seed, base),
            fake_record("tie", "sasrec-ce", seed, base),
            fake_record("tie", "pop", seed, base + 30),
        ]
    records.append(fake_record("good", "svae", 0, base + 5, curve=[{"epoch": 1, "loss": 1.0, "active_units": 3, "valid": {"NDCG@10": 0.1}}]))
    for steps in (5, 50):
        for sampler in ("ancestral", "strided"):
            records.append(fake_record("good", "diffrec", 0, base // (2 if sampler == "strided" else 3), tag=f"steps={steps},sampler={sampler}", config={"steps": steps, "sampler": sampler, "sampler_steps": 5, "samples": 2}, eval_seconds=steps / 10))
    for noise in ("target", "sequence"):
        records.append(fake_record("good", "diffrec", 0, base // 2 + (3 if noise == "sequence" else 0), tag=f"noise={noise},sampler=strided", config={"noise": noise, "sampler": "strided"}))
    records.append(fake_record("good", "sasrec-ce", 0, base, suite="smoke"))
    for r in records:
        write_json_atomic(tmp_path / "runs" / f"{r['key']}.json", r)
    return tmp_path


def md_table(md: str, dataset: str, section: str = "## Unmasked") -> dict[str, list[str]]:
    """The means table of one dataset in one section of a Markdown report: {metric or "header": cells}."""
    md = md[md.index(section):]
    lines = md[md.index(f"**{dataset}**"):].splitlines()[2:]
    rows = {}
    for line in lines[: lines.index("")]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not cells[0].startswith(":--"):
            rows["header" if cells[0] == "Metric" else cells[0]] = cells[1:]
    return rows


def test_tables_mark_best_second_and_significance(results):
    paths = report.write_report(results, suites=["demo"])
    md = (results / "tables" / "demo.md").read_text()
    good = md_table(md, "good")
    # metrics as rows, models as columns grouped by family, DiffRec's gain over the best baseline last
    assert [h.split("<br>")[0] for h in good["header"]] == ["pop", "sasrec-ce", "svae", "diffrec", "Improv."]
    assert "<sub>classic</sub>" in good["header"][0] and "<sub>VAE</sub>" in good["header"][2]
    assert list(good)[1:] == list(report.TABLE_METRICS)
    pop, sasrec, svae, diffrec, gain = good["NDCG@10"]
    assert diffrec.startswith("**") and sasrec.startswith("<ins>") and not pop.startswith(("**", "<ins>"))
    assert gain.startswith("+") and gain.endswith("% †")  # better, and significantly so
    recs = [json.loads(p.read_text()) for p in (results / "runs").glob("good__*__default__*")]
    means = {m: np.mean([r["metrics"]["test"]["NDCG@10"] for r in recs if r["model"] == m and r["suite"] == "demo"]) for m in ("diffrec", "sasrec-ce")}
    assert diffrec == f"**{means['diffrec'] * 100:.2f}**"  # x100, the mean over seeds, no ± in the cell
    assert gain == f"{(means['diffrec'] - means['sasrec-ce']) / means['sasrec-ce'] * 100:+.1f}% †"
    assert "(n=" not in md and "**good** (3 seeds per model; sasrec-ce 2, svae 1)" in md  # seed counts beside the dataset, not in cells
    assert not any("†" in c for c in md_table(md, "tie")["NDCG@10"])  # equal per-user ranks: p = 1, no mark
    assert md.index("## Unmasked") < md.index("## History-masked") and md.count("Protocol card") == 2
    assert "standard deviation over seeds" in md and "## Cost" in md
    cost = md[md.index("## Cost"):]
    assert "| sasrec-ce | classic | 12.3K | 11 | 5.000 | 3 | cpu |" in cost  # train 10+seed s, 1 s per 200 users
    for needle in ("good-sha", "tie-sha", "abc123", "seeds**: 0, 1, 2", "pop: defaults (untuned)"):
        assert needle in md, needle
    tex = (results / "tables" / "demo.tex").read_text()
    assert r"\resizebox" not in tex and r"\begin{table*}" in tex
    for needle in (r"\toprule", r"\multicolumn{2}{c}{classic}", r"\cmidrule(lr){2-3}", r"\textit{good}", r"\textbf{", r"\underline{", r"$^{\dagger}$", r"\bottomrule", "% datasets:", "tab:demo-test-std", "tab:demo-cost"):
        assert needle in tex, needle
    sig = (results / "tables" / "demo_significance.csv").read_text()
    assert sig.count("\n") == 1 + 2 * 2 * 6  # header + 2 tables x 2 datasets x 6 metrics
    assert results / "README.md" in paths


def test_cells_built_from_dirty_records_are_marked(results):
    """A record made by uncommitted code (`+dirty`) marks every cell it enters, and only those."""
    path = next((results / "runs").glob("good__pop__default__s1__*.json"))
    record = json.loads(path.read_text())
    record["environment"]["git_commit"] += "+dirty"
    write_json_atomic(path, record)
    report.write_report(results, suites=["demo"])
    md = (results / "tables" / "demo.md").read_text()
    good, tie = md_table(md, "good"), md_table(md, "tie")
    assert all(row[0].endswith("§") for metric, row in good.items() if metric != "header")  # pop's mean on good
    assert not any("§" in c for metric, row in good.items() if metric != "header" for c in row[1:])
    assert not any("§" in c for row in tie.values() for c in row)
    assert "§ built from at least one record whose code commit had uncommitted changes" in md
    assert "| pop | classic | 12.3K | 11 § | 5.000 § | 3 | cpu |" in md[md.index("## Cost"):]
    tex = (results / "tables" / "demo.tex").read_text()
    assert r"$^{\S}$" in tex and r"$^\S$ built from" in tex


PAGES = {  # a one-column article at \footnotesize, and a two-column one whose table* is \small (the default)
    "one-column": "\\documentclass[10pt]{article}\n\\usepackage{booktabs}\n\\newcommand{\\benchtablesize}{\\footnotesize}\n",
    "two-column": "\\documentclass[10pt,twocolumn]{article}\n\\usepackage{booktabs}\n",
}


def compile_tables(tex: Path, tmp_path: Path) -> None:
    """Compiles `tex` on both pages with pdflatex; fails on any LaTeX error or overfull box."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (Debian: apt-get install texlive-latex-recommended; .ci/run installs it)")
    assert "\\resizebox" not in tex.read_text(), f"{tex}: a scaled table hides how wide it is"
    for name, preamble in PAGES.items():
        folder = tmp_path / f"{tex.stem}-{name}"
        folder.mkdir()
        shutil.copy(tex, folder / "tables.tex")
        try:
            tables.pdflatex(preamble + "\\begin{document}\n\\input{tables}\n\\end{document}\n", folder, runs=2)
        except tables.LatexError as exc:
            pytest.fail(f"{tex} on a {name} page: {exc}")


def test_generated_tex_compiles_without_overfull_boxes(results, tmp_path):
    report.write_report(results, suites=["demo"])
    compile_tables(results / "tables" / "demo.tex", tmp_path)


@pytest.mark.parametrize("tex", sorted((PROJECT_ROOT / "results" / "tables").glob("*.tex")), ids=lambda p: p.name)
def test_committed_tex_compiles_without_overfull_boxes(tex, tmp_path):
    compile_tables(tex, tmp_path)


def test_pdflatex_reports_an_overfull_table(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    wide = "\\documentclass{article}\n\\begin{document}\n\\begin{tabular}{l}" + "x" * 400 + "\\end{tabular}\n\\end{document}\n"
    with pytest.raises(tables.LatexError, match="Overfull"):
        tables.pdflatex(wide, tmp_path)


def test_pdf_holds_the_card_tables_and_figures(results, capsys):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    assert report.main(["--out", str(results), "--suite", "demo", "--pdf"]) == 0
    pdf = results / "tables" / "demo.pdf"
    assert f"wrote {pdf}" in capsys.readouterr().out
    first = pdf.read_bytes()
    assert first.startswith(b"%PDF")
    records = load_records(results / "runs")
    summary = report.suite_report("demo", records, results)
    doc = report.pdf_document(summary, results)
    assert r"\item[datasets]" in doc and r"\item[git commit] abc123" in doc  # the protocol card
    assert doc.count(r"\begin{table*}") == 6  # means and deviations, unmasked and masked, the models at one width, and the cost table
    assert doc.count(r"\includegraphics") == len([p for p in summary["figures"] if p.suffix == ".pdf"]) == 6  # with the ablation curves
    report.main(["--out", str(results), "--suite", "demo", "--pdf"])
    assert pdf.read_bytes() == first  # no date inside: the same records give the same bytes


def test_figures_and_readme(results):
    (results / report.DISCUSSION).write_text("DiffRec wins on good, ties on tie.\n")
    report.write_report(results)
    figures = results / "figures" / "demo"
    for name in ("ndcg_vs_steps", "noise_target_vs_sequence", "quality_vs_cost", "validation_curves", "diagnostics_svae"):
        assert (figures / f"{name}.png").stat().st_size > 1000 and (figures / f"{name}.pdf").exists(), name
    assert not (figures / "diagnostics_pop.png").exists()  # nothing beyond loss and validation to show
    readme = (results / "README.md").read_text()
    assert "## Suite `demo`" in readme and "## Suite `smoke`" in readme
    assert readme.index("DiffRec wins on good, ties on tie.") < readme.index("## Suite `demo`")  # the hand-written part leads
    assert "figures/demo/ndcg_vs_steps.png" in readme and "(figures/demo/ndcg_vs_steps.pdf)" in readme
    assert "Missing cells: unknown" in readme  # "demo" is not a packaged suite
    smoke = readme[readme.index("## Suite `smoke`") :]
    assert "Missing cells (" in smoke and f"- ml-100k / diffrec / noise=sequence,sampler=strided ({report.AWAITING}): seed 0\n" in smoke
    ablations = (results / "tables" / "demo_ablations.md").read_text()
    assert "steps=50,sampler=strided" in ablations and "noise=sequence,sampler=strided" in ablations
    # each ablation row sits beside its main cell on the same seeds, with a paired test
    (row,) = [line for line in ablations.splitlines() if "noise=sequence,sampler=strided" in line]
    recs = {r["tag"]: r for r in (json.loads(p.read_text()) for p in (results / "runs").glob("good__diffrec__*__s0__*.json"))}
    per_user = {tag: per_user_metrics(recs[tag]["per_user"]["test_ranks"])["NDCG@10"] for tag in ("default", "noise=sequence,sampler=strided")}
    p = report.paired_pvalue(per_user["noise=sequence,sampler=strided"], per_user["default"])
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert f"{recs['default']['metrics']['test']['NDCG@10']:.4f}" in cells and f"{p:.2g}" in cells and p < 0.05
    assert cells[-1] == "cpu"  # where its timing was taken
    # target against sequence noising: the pair side by side, tested against each other
    noise = ablations[ablations.index("## Target-only against whole-sequence noising") :]
    (row,) = [line for line in noise.splitlines() if line.startswith("| good")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    target, sequence = (per_user_metrics(recs[f"noise={n},sampler=strided"]["per_user"]["test_ranks"])["NDCG@10"] for n in ("target", "sequence"))
    p = report.paired_pvalue(sequence, target)
    assert cells[:4] == ["good", "diffrec", "sampler=strided", "1"] and p < 0.05
    assert cells[4:7] == [f"{target.mean():.4f}", f"{sequence.mean():.4f}", f"{p:.2g}"]
    first = {p: p.read_bytes() for p in figures.iterdir()}
    report.write_report(results)
    assert {p: p.read_bytes() for p in figures.iterdir()} == first  # regenerating changes nothing


def test_cli_without_records_fails_clearly(tmp_path, capsys):
    assert report.main(["--out", str(tmp_path)]) == 2
    assert "no run records" in capsys.readouterr().err


def test_a_discussion_citing_a_record_the_folder_lacks_stops_the_report(results, capsys):
    (results / report.DISCUSSION).write_text("Held: `runs/good__diffrec__default__s0__0000000000`; gone: `..._s1__0123456789abc` and `..._s2__0123456789`.\n")
    assert report.missing_citations((results / report.DISCUSSION).read_text(), results / "runs") == ["0123456789"]  # 13 hex digits are no key
    assert report.main(["--out", str(results)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {results / report.DISCUSSION}: cites records") and "keys 0123456789)" in line
    assert not (results / "README.md").exists() and not (results / "tables").exists()  # nothing written
    (results / report.DISCUSSION).write_text("Held: `runs/good__diffrec__default__s0__0000000000`.\n")
    assert report.main(["--out", str(results)]) == 0


def test_the_committed_discussion_cites_only_committed_records():
    """No sentence of results/discussion.md may rest on a record that results/runs does not hold."""
    results = PROJECT_ROOT / "results"
    text = (results / report.DISCUSSION).read_text()
    assert len(report.CITED_RECORD.findall(text)) >= 20  # it cites records by key (the pattern still finds them)
    assert report.missing_citations(text, results / "runs") == []


def test_a_record_counts_for_every_suite_that_holds_its_cell(tmp_path):
    """Suites share cells (pop's, say): membership is by cell key, not by the suite that wrote it."""
    from benchmark.suite import load_suite_file, resolve_suite

    cell = resolve_suite(*load_suite_file("smoke")).cells[0]
    rng = np.random.default_rng(1)
    shared = {**fake_record(cell.dataset, cell.model, cell.seed, rng.integers(0, 60, N_USERS), suite="quick", tag=cell.tag), "key": cell.key}
    stale = {**fake_record(cell.dataset, cell.model, cell.seed, rng.integers(0, 60, N_USERS), suite="smoke", tag=cell.tag), "key": "old__config__0000000000"}
    stale["finished_at"] = "2027-01-01T00:00:00"  # newer, but no longer a cell of the suite
    for r in (shared, stale):
        write_json_atomic(tmp_path / "runs" / f"{r['key']}.json", r)
    report.write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    smoke = readme[readme.index("## Suite `smoke`") :]
    assert smoke.startswith("## Suite `smoke`\n\n1 run records")
    missing = smoke[smoke.index("Missing cells") :]
    assert f"- {cell.dataset} / {cell.model} / {cell.tag}:" not in missing  # its one seed has a record
    other = resolve_suite(*load_suite_file("smoke")).cells[1]
    assert f"- {other.dataset} / {other.model} / {other.tag} ({report.AWAITING}): seed {other.seed}\n" in missing  # smoke tunes it; no study here
    quick = readme[readme.index("## Suite `quick`") :]
    assert quick.startswith("## Suite `quick`\n\n0 run records")  # it wrote the record, but holds no such cell
    # a record whose cell the suite no longer holds is reported apart, as evidence of the old protocol
    superseded = readme[readme.index("## Suite `smoke-superseded`") :]
    assert superseded.startswith("## Suite `smoke-superseded`\n\n1 run records") and "earlier definition of the suite `smoke`" in superseded
    assert "old__config" not in smoke[: smoke.index("## Suite", 3)] and (tmp_path / "tables" / "smoke-superseded.md").is_file()


def test_a_new_report_leaves_no_stale_output_of_a_suite(results, monkeypatch):
    out = results
    report.write_report(out)
    stale = [out / "figures" / "demo" / "gone.png", out / "tables" / "demo_gone.md"]
    for path in stale:
        path.write_text("from an earlier report")
    kept = out / "tables" / "demo.pdf"
    kept.write_text("an earlier PDF")
    report.write_report(out)
    assert not any(p.exists() for p in stale) and (out / "tables" / "demo.md").is_file()
    assert kept.read_text() == "an earlier PDF"  # a report without --pdf keeps the PDF

    def broken_pdf(*args):
        raise tables.LatexError("overfull")

    stale[0].write_text("from an earlier report")
    monkeypatch.setattr(report, "write_pdf", broken_pdf)
    with pytest.raises(tables.LatexError):
        report.write_report(out, pdf=True)
    assert stale[0].exists() and kept.read_text() == "an earlier PDF"  # a report that fails removes nothing


def test_a_suite_where_no_dataset_has_two_models_gets_no_table_legend_or_cost(tmp_path):
    """Its first cells in: only the note that they are left out, no empty LaTeX or cost table."""
    for seed in range(2):
        r = fake_record("beauty", "sasrec-ce", seed, np.arange(N_USERS))
        write_json_atomic(tmp_path / "runs" / f"{r['key']}.json", r)
    paths = report.write_report(tmp_path)
    md = (tmp_path / "tables" / "demo.md").read_text()
    assert md.count("Left out (one model only, nothing to compare): beauty.") == 2  # unmasked and masked
    assert "Holm" not in md and "## Cost" not in md and "Protocol card" not in md
    assert not (tmp_path / "tables" / "demo.tex").exists() and tmp_path / "tables" / "demo.tex" not in paths
    readme = (tmp_path / "README.md").read_text()
    assert "Left out (one model only, nothing to compare): beauty." in readme[readme.index("## Suite `demo`"):]


def test_the_protocol_card_names_the_datasets_where_tuning_differs():
    # studies are per dataset: a model tuned on beauty and run with defaults on toys must say both
    assert report.tuning_per_dataset({"beauty": "8 trials (study s)", "toys": "defaults (untuned)"}) == "beauty 8 trials (study s), toys defaults (untuned)"
    assert report.tuning_per_dataset({"beauty": "defaults (untuned)", "toys": "defaults (untuned)"}) == "defaults (untuned)"
    assert report.tuning_phrase({}) == "defaults (untuned)"
    assert report.tuning_phrase({"study": "s", "trials": 8, "trial_time_budget_s": 60.0}) == "8 trials of at most 60 s (study s)"
    assert report.tuning_phrase({"study": "s", "trials": 20, "trial_epochs": 40, "params_of": "beauty"}) == "beauty's 20 trials of at most 40 epochs (study s)"


def test_the_protocol_card_gives_a_model_with_nothing_to_train_no_stopping_rule():
    # popularity runs under the suite's stopping rule but trains no epoch: its budget is "none"
    trained = fake_record("beauty", "sasrec-ce", 0, [1, 2, 3])
    counted = {**fake_record("beauty", "pop", 0, [4, 5, 6]), "stopped": NOT_TRAINED}
    card = dict(report.protocol_card([trained, counted]))
    assert card["budgets"] == f"sasrec-ce: patience 2; pop: none ({NOT_TRAINED})"


def test_natural_order_of_settings():
    tags = ["sampler_steps=10", "sampler_steps=2", "steps=1000", "steps=50", "hidden=128", "steps=2"]
    assert sorted(tags, key=report.natural_key) == ["hidden=128", "sampler_steps=2", "sampler_steps=10", "steps=2", "steps=50", "steps=1000"]


def test_missing_cells_are_grouped_with_their_seeds_in_suite_order(tmp_path):
    from types import SimpleNamespace

    from benchmark.suite import load_suite_file, resolve_suite

    cells = [SimpleNamespace(dataset=d, model=m, tag=t, seed=s, key=f"{d}{m}{t}{s}") for d, m, t, s in
             [("toys", "pop", "default", 0), ("beauty", "diffrec", "steps=2", 0), ("toys", "pop", "default", 1), ("toys", "pop", "default", 2)]]
    suite = SimpleNamespace(cells=cells, awaiting_studies=lambda cells: [])
    done = {"toyspopdefault1"}
    assert report.missing_cells(suite, done) == {"toys / pop / default": [0, 2], "beauty / diffrec / steps=2": [0]}
    assert report.missing_cells(suite, {c.key for c in cells}) == {}
    assert report.missing_cells(None, done) is None
    # a tuned suite's cells whose study is not exported yet say so: they will not train at the defaults listed
    missing = report.missing_cells(resolve_suite(*load_suite_file("paper"), tuning_dir=tmp_path), set())
    assert missing[f"beauty / sasrec-ce / default ({report.AWAITING})"] == [0, 1, 2, 3, 4]
    assert missing["beauty / pop / default"] == [0, 1, 2]  # nothing to tune
    assert report.AWAITING_NOTE in report.readme([{"suite": "paper", "records": 0, "tables": [], "main": [], "missing": missing}], tmp_path)


def test_compare_two_sets_of_records_seed_by_seed_and_averaged(results, capsys):
    text = report.compare(results, "good__diffrec__default__s*", "good__sasrec-ce__default__s*")
    recs = [{r["seed"]: r for r in (json.loads(p.read_text()) for p in sorted((results / "runs").glob(f"good__{m}__default__s*")))} for m in ("diffrec", "sasrec-ce")]
    a, b = (np.mean([per_user_metrics(side[s]["per_user"]["test_ranks"])["NDCG@10"] for s in range(3)], axis=0) for side in recs)
    (mean_row,) = [line for line in text.splitlines() if "mean of 3" in line]
    cells = [c.strip() for c in mean_row.strip("|").split("|")]
    assert cells[1:4] == [f"{a.mean():.4f}", f"{b.mean():.4f}", f"{report.paired_pvalue(a, b):.2g}"]
    assert sum(line.startswith("| 0 ") or line.startswith("| 1 ") or line.startswith("| 2 ") for line in text.splitlines()) == 3
    with pytest.raises(ValueError, match="matches no run record"):
        report.compare(results, "nothing__*", "good__sasrec-ce__default__s*")
    with pytest.raises(ValueError, match="two records of seed 0"):
        report.compare(results, "good__diffrec__*", "good__sasrec-ce__default__s*")
    assert report.main(["--out", str(results), "--compare", "good__svae__*", "good__pop__*"]) == 0  # seed 0 only: no mean row
    assert "mean of" not in capsys.readouterr().out
    assert report.main(["--out", str(results), "--compare", "tie__*", "good__pop__*"]) == 2
    assert "two records of seed" in capsys.readouterr().err


def test_cost_points_keep_devices_apart():
    records = [fake_record("good", "diffrec", seed, [0] * N_USERS, eval_seconds=seconds) for seed, seconds in ((0, 2.0), (1, 4.0), (2, 0.02))]
    records[2]["environment"]["device"] = "NVIDIA H200"
    points = report.cost_points(report.records_frame(records)).set_index("device")
    assert points.loc["cpu", "seeds"] == 2 and points.loc["NVIDIA H200", "seeds"] == 1
    assert points.loc["cpu", "cost"] == pytest.approx(3.0 / N_USERS * 1000)  # the mean of the CPU's two, not of all three
    assert points.loc["NVIDIA H200", "cost"] == pytest.approx(0.02 / N_USERS * 1000)


def test_a_dataset_where_no_model_trained_gets_no_curve_panel(monkeypatch, tmp_path):
    records = [fake_record("ml", "pop", 0, np.arange(N_USERS)), fake_record("ml", "diffrec", 0, np.arange(N_USERS)),
               fake_record("toy", "sasrec-ce", 0, np.arange(N_USERS)), fake_record("toy", "diffrec", 0, np.arange(N_USERS))]
    records[0]["curve"] = []  # popularity does not train: on ml only diffrec has a curve, nothing to compare
    frame = report.records_frame(records)
    drawn = capture_figures(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty panel's legend warns
        paths = figures.figure_curves(frame, records, tmp_path)
    assert paths and [ax.get_title() for ax in drawn[0].axes if ax.get_visible()] == ["toy"]
    assert figures.figure_curves(frame[frame.dataset == "ml"], records, tmp_path) == []


def capture_figures(monkeypatch) -> list:
    """Figures saved from now on, kept open for the test to inspect."""
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, folder, name: drawn.append(fig) or [folder / f"{name}.png", folder / f"{name}.pdf"])
    return drawn


def test_a_model_keeps_its_colour_in_every_figure(monkeypatch, tmp_path):
    from benchmark.registry import MODELS

    colours = [figures.model_color(m) for m in MODELS]
    assert len(set(colours)) == len(colours)  # every registered model has its own
    assert figures.model_color("some-new-model") == figures.model_color("some-new-model") not in colours  # by name, not by position
    records = [fake_record(d, m, 0, np.arange(N_USERS) % (7 + i)) for d, models in (("a", ("pop", "diffrec")), ("b", ("sasrec-ce", "svae", "diffrec", "zzz"))) for i, m in enumerate(models)]
    frame = report.records_frame(records)
    drawn = capture_figures(monkeypatch)
    figures.figure_curves(frame, records, tmp_path)
    figures.figure_cost(report.cost_points(frame), tmp_path)
    curves, cost = drawn
    for ax in curves.axes:
        for line in ax.get_lines():
            assert matplotlib.colors.same_color(line.get_color(), figures.model_color(line.get_label())), line.get_label()
    legend = {text.get_text(): handle for text, handle in zip(cost.legends[0].get_texts(), cost.legends[0].legend_handles)}
    for model in ("pop", "diffrec", "sasrec-ce", "svae", "zzz"):
        assert matplotlib.colors.same_color(legend[model].get_markerfacecolor(), figures.model_color(model)), model
    points = [tuple(c) for ax in cost.axes for coll in ax.collections for c in coll.get_facecolors()]
    assert points.count(tuple(matplotlib.colors.to_rgba(figures.model_color("diffrec")))) == 2  # its point on a and on b


def test_a_panel_with_one_model_is_left_out_and_points_are_not_labelled(monkeypatch, tmp_path):
    records = [fake_record("ml-1m", "pop", 0, np.arange(N_USERS))] + [fake_record("beauty", m, 0, np.arange(N_USERS) % (5 + i)) for i, m in enumerate(("pop", "sasrec-ce", "diffrec"))]
    frame = report.records_frame(records)
    drawn = capture_figures(monkeypatch)
    figures.figure_cost(report.cost_points(frame), tmp_path)
    (cost,) = drawn
    assert [ax.get_title() for ax in cost.axes if ax.get_visible()] == ["beauty"]  # ml-1m: a single pop point
    assert cost.get_suptitle().endswith("?")  # the question it answers
    assert not any(ax.texts for ax in cost.axes)  # a legend names the models; no label per point
    assert figures.figure_cost(report.cost_points(frame[frame.dataset == "ml-1m"]), tmp_path) == []


def test_models_at_one_width_pair_main_and_width_control_cells(tmp_path):
    """diffrec tuned to 64 and sasrec-ce to 256, each also run at the other's width (tags
    hidden=W): the table compares them within each width, never across."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 60, N_USERS)
    ranks = {("diffrec", 64): base // 2, ("diffrec", 256): base // 3, ("sasrec-ce", 64): base, ("sasrec-ce", 256): base // 3}
    records = []
    for seed in range(3):
        for (model, hidden), r in ranks.items():
            tuned = hidden == (64 if model == "diffrec" else 256)
            if seed == 2 and not tuned:
                continue  # the width control runs on fewer seeds than the main cells
            records.append(fake_record("d", model, seed, r, tag="tuned" if tuned else f"hidden={hidden}", config={"hidden": hidden}))
    records.append(fake_record("d", "diffrec", 0, base, tag="steps=5", config={"hidden": 256, "steps": 5}))  # another ablation: not a width point
    for r in records:
        write_json_atomic(tmp_path / "runs" / f"{r['key']}.json", r)
    report.write_report(tmp_path, suites=["demo"])
    md = (tmp_path / "tables" / "demo.md").read_text()
    section = md[md.index("## At one width"):md.index("## Cost")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| d ")]
    assert [r[:3] for r in rows] == [["d", "64", "diffrec"], ["d", "256", "diffrec"]]
    ndcg = {hidden: metrics_from_ranks(r)["NDCG@10"] for (model, hidden), r in ranks.items() if model == "diffrec"}
    at64, at256 = rows
    assert at64[3:6] == [f"{ndcg[64]:.4f} ± 0.0000", "sasrec-ce (2)", f"{metrics_from_ranks(base)['NDCG@10']:.4f} ± 0.0000"]  # seeds 0, 1 only
    assert at256[3:5] == [f"{ndcg[256]:.4f} ± 0.0000", "sasrec-ce (2)"] and at256[6] == "1"  # equal ranks: p = 1
    assert float(at64[6]) < 0.05
    tex = (tmp_path / "tables" / "demo.tex").read_text()
    width = tex[tex.index(r"\label{tab:demo-width}"):]
    assert rf"d & 64 & diffrec & {ndcg[64] * 100:.2f} $\pm$ 0.00 & sasrec-ce (2) & {metrics_from_ranks(base)['NDCG@10'] * 100:.2f} $\pm$ 0.00 & " in width
    compile_tables(tmp_path / "tables" / "demo.tex", tmp_path)


def test_ablation_curves_show_each_training_once_unmasked_and_masked(monkeypatch, tmp_path):
    """One panel per dataset/model with a training ablation; a setting that reuses its base's
    training is left out (same curve); masked lines where the curve holds them; legends name the
    settings by the keys in which they differ."""
    def curve(scale, masked):
        return [{"epoch": e, "loss": 1.0, "valid": {"NDCG@10": scale * e}, **({"valid_masked": {"NDCG@10": 2 * scale * e}} if masked else {})} for e in (2, 4)]

    records = [
        fake_record("a", "sasrec-ss", 0, np.arange(N_USERS), tag="hidden=64,train.selection=masked", curve=curve(0.01, True)),
        fake_record("a", "sasrec-ss", 0, np.arange(N_USERS), tag="hidden=64,train.selection=unmasked", curve=curve(0.02, True)),
        fake_record("a", "sasrec-ss", 1, np.arange(N_USERS), tag="hidden=64,train.selection=unmasked", curve=curve(0.03, True)),  # a higher seed: not drawn
        fake_record("a", "diffrec", 0, np.arange(N_USERS), curve=curve(0.01, False)),
        fake_record("a", "diffrec", 0, np.arange(N_USERS), tag="sampler=strided", curve=curve(0.01, False)),
        fake_record("b", "sasrec-ce", 0, np.arange(N_USERS)),  # no ablation: no panel
        fake_record("a", "sasrec-ss", 0, np.arange(N_USERS), tag="hidden=256,train.selection=masked", curve=curve(0.005, True)),
        fake_record("a", "sasrec-ss", 0, np.arange(N_USERS), tag="hidden=256,train.selection=unmasked", curve=curve(0.005, True)),
    ]
    records[4]["training"] = {"reused": True}  # scores diffrec's default training: nothing new to draw
    # one training for both rules (benchmark.run): the unmasked cell trained it, the masked one loaded its model
    records[6]["training"] = {"reused": True, "selections": ["masked", "unmasked"]}
    records[7]["training"] = {"reused": False, "selections": ["masked", "unmasked"]}
    frame = report.records_frame(records)
    drawn = capture_figures(monkeypatch)
    paths = figures.figure_ablation_curves(frame, records, tmp_path)
    assert [p.name for p in paths] == ["ablation_curves.png", "ablation_curves.pdf"]
    (ax,) = [ax for ax in drawn[0].axes if ax.get_visible()]  # diffrec's only setting reuses the main training
    assert ax.get_title() == "a / sasrec-ss"
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--"] * 3
    assert [list(line.get_ydata()) for line in ax.get_lines()][2:] == [[0.04, 0.08], [0.08, 0.16], [0.01, 0.02], [0.02, 0.04]]  # seed 0 of "unmasked"; the shared training
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["hidden=64,train.selection=masked (s0)", "hidden=64,train.selection=unmasked (s0)", "hidden=256 (s0, selected masked and unmasked)"]
    assert ax.get_legend().get_title() is None or ax.get_legend().get_title().get_text() == ""
    assert figures.figure_ablation_curves(frame[frame.dataset == "b"], records, tmp_path) == []
