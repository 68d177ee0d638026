"""The peer benchmark's pieces that run without RecBole: the atomic-file conversion, the work
counts, the target verdicts and table, and `bench_report` reading RecBole's times from its output."""
import json

import numpy as np
import pandas as pd
import pytest

from benchmark import bench_report
from benchmark.peer import best, gemm_gflop, load_recbole_reference, markdown, project_epoch_work, recbole_epoch_work, verdicts, write_atomic_inter
from benchmark.splits import leave_one_out
from tests.synthetic import chain_dataset


def test_atomic_file_golden(tmp_path):
    path = write_atomic_inter([np.array([3, 1, 2]), np.array([5, 4, 3, 2])], tmp_path, "tiny")
    assert path == tmp_path / "tiny" / "tiny.inter"
    assert path.read_text() == "user_id:token\titem_id:token\ttimestamp:float\n1\t3\t1\n1\t1\t2\n1\t2\t3\n2\t5\t1\n2\t4\t2\n2\t3\t3\n2\t2\t4\n"
    assert [p.name for p in path.parent.iterdir()] == ["tiny.inter"]  # no temporary file left


def test_atomic_file_gives_recbole_the_projects_leave_one_out(tmp_path):
    """RecBole orders each user's rows by timestamp, makes one (prefix -> item) example per row after
    the first and splits off the last example as test, the one before as validation: read back that
    way, the file gives the project's split."""
    data = chain_dataset(n_items=30, users=25, seed=3)
    split = leave_one_out(data)
    frame = pd.read_csv(write_atomic_inter(data.sequences, tmp_path, "chain"), sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    users = [g.sort_values("timestamp")["item_id"].to_numpy() for _, g in frame.groupby("user_id", sort=True)]
    assert all(np.array_equal(u, s) for u, s in zip(users, data.sequences, strict=True))
    assert [u[-1] for u in users] == split.test.targets.tolist()
    assert [u[-2] for u in users] == split.valid.targets.tolist()
    assert sum(len(u) - 3 for u in users) == int((split.train_targets > 0).sum())  # RecBole's training examples


def test_gemm_gflop_golden():
    # d = 2, one layer: 12 d^2 + 2 d = 52 per (token, pair), d (n_items + 1) = 8 per target; x 3 passes x 2 FLOP
    assert gemm_gflop(1, 1, 1, hidden=2, layers=1, n_items=3) == pytest.approx(3 * 2 * 60 / 1e9)
    assert gemm_gflop(0, 0, 5, hidden=2, layers=4, n_items=3) == pytest.approx(3 * 2 * 40 / 1e9)
    assert recbole_epoch_work(10, 50) == {"tokens": 500, "attention_pairs": 25000, "targets": 10}


def test_project_epoch_work_counts_every_target_once():
    split = leave_one_out(chain_dataset(n_items=30, users=40, seed=1))
    work = project_epoch_work(split, 8, np.random.default_rng(0))
    assert work["targets"] == int((split.train_targets > 0).sum())
    assert work["targets"] <= work["tokens"] < split.train_inputs.numel()  # batches are cut to their widest
    assert work["attention_pairs"] <= work["tokens"] * split.max_len


def fake_timings(**cpu):
    return {k: [{"cpu_s": v * 1.5, "wall_s": v * 3}, {"cpu_s": v, "wall_s": v * 2}] for k, v in cpu.items()}


def test_verdicts_use_best_rounds_and_bounds():
    t = fake_timings(recbole_epoch=300.0, **{"sasrec-ce_epoch": 10.0, "diffrec_epoch": 12.5, "recbole_eval": 16.0, "sasrec-ce_eval": 2.0, "diffrec_eval": 4.0})
    rows = {v["target"]: v for v in verdicts(t)}
    assert best(t, "recbole_epoch") == 300.0
    assert rows["SASRec-CE epoch: RecBole / project"]["ratio"] == pytest.approx(30.0)
    assert [v["verdict"] for v in rows.values()] == ["met", "met", "met", "met", "MISSED"]  # 30 >= 30, 8 >= 8, 4 >= 3, 2 <= 2, 1.25 > 1.2
    assert rows["DiffRec evaluation: RecBole / DiffRec"]["ratio"] == pytest.approx(4.0)
    t["diffrec_eval"] = fake_timings(x=6.0)["x"]  # 16 / 6 < 3, 6 / 2 > 2
    assert [v["verdict"] for v in verdicts(t)][2:4] == ["MISSED", "MISSED"]
    del t["diffrec_eval"]
    assert len(verdicts(t)) == 3  # ratios without both sides are left out


def fake_measurement(commit="abc123"):
    t = fake_timings(recbole_epoch=360.0, **{"sasrec-ce_epoch": 27.0, "diffrec_epoch": 30.0, "recbole_eval": 17.0, "sasrec-ce_eval": 3.5, "diffrec_eval": 11.0})
    settings = {"eval_args": {"split": {"LS": "valid_and_test"}}, "MAX_ITEM_LIST_LENGTH": 50, "train_batch_size": 256, "eval_batch_size": 1024, "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2, "hidden_dropout_prob": 0.3, "attn_dropout_prob": 0.3, "loss_type": "CE", "learning_rate": 0.001}
    work = {side: {"tokens": 10, "attention_pairs": 100, "targets": 5, "gflop": g, "output_gflop": 600.0} for side, g in (("project", 684.0), ("recbole", 4993.2))}
    return {
        "date": "2026-12-06T07:00:00+00:00", "dataset": "beauty", "data_file": "beauty.txt", "users": 3, "items": 4, "test_users": 3, "threads": 1,
        "environment": {"git_commit": commit, "device": "cpu (X)", "host_cpus": 2, "packages": {"torch": "2.13.0"}},
        "recbole": {"recbole": "1.2.1", "torch": "2.13.0", "threads": 1, "test_users": 3, "users": 3, "items": 4, "sequence_width": 50, "settings": settings},
        "load_before": [1, 1, 1], "load_after": [2, 2, 2], "timings": t, "verdicts": verdicts(t), "work": work, "gemm_gflop_s": 171.0,
        "thread_scaling": [{"threads": 1, "wall_s": 30.0, "cpu_s": 27.0, "load_before": [1, 1, 1]}], "host_cpus_note": "note",
    }


def test_markdown_table_states_ratios_work_and_dirty_tree():
    text = markdown(fake_measurement())
    assert "| SASRec-CE epoch: RecBole / project | 13.33x | >= 30 | MISSED |" in text
    assert "| DiffRec epoch / SASRec-CE epoch | 1.11x | <= 1.2 | met |" in text
    assert "(7.3x;" in text and "25.3 GFLOP/s, 15% of it" in text
    assert "dirty" not in text and "dirty" in markdown(fake_measurement("abc123+dirty"))


def test_bench_report_takes_recbole_from_the_peer_output(tmp_path):
    peer = tmp_path / "peer-recbole.json"
    peer.write_text(json.dumps(fake_measurement()))
    ref = load_recbole_reference(peer)
    assert (ref["epoch_s"], ref["eval_s"]) == (360.0, 17.0) and "2026-12-06" in ref["source"] and "cpu (X)" in ref["source"]
    df = pd.DataFrame(
        [
            {"kind": "test_full_ranking_evaluation", "model": "sasrec-ce", "users": 22363, "min_s": 3.4, "users/s": 6577.0, "sampler": "", "n": None},
            {"kind": "test_training_throughput", "model": "sasrec-ce", "seq/s": 800.0, "targets/s": 5000.0, "epoch_s (extrapolated)": 24.0, "sampler": "", "users": 256, "n": None, "min_s": 1.0},
        ]
    )
    lines = bench_report.targets(df, ref)
    assert "speed-up 5.00x over RecBole's 17.0 s" in lines[0] and "speed-up 15.00x over RecBole's 360 s" in lines[1]
    assert load_recbole_reference(tmp_path / "absent.json") is None
    assert not any("RecBole's" in line for line in bench_report.targets(df, None))


def test_hotspots_rank_operators_by_self_time_with_their_share():
    from types import SimpleNamespace

    from benchmark.hotspots import op_shares

    events = [SimpleNamespace(key="aten::mm", count=4, self_cpu_time_total=6000.0), SimpleNamespace(key="aten::exp_", count=2, self_cpu_time_total=3000.0), SimpleNamespace(key="aten::add", count=9, self_cpu_time_total=1000.0)]
    shares = op_shares(events, top=2)
    assert shares["total_ms"] == 10.0  # the total counts every operator, listed or not
    assert shares["ops"] == [{"op": "aten::mm", "calls": 4, "self_ms": 6.0, "share": 0.6}, {"op": "aten::exp_", "calls": 2, "self_ms": 3.0, "share": 0.3}]
