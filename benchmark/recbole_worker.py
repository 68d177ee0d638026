"""The RecBole side of `benchmark.peer`: run by the RecBole venv's python, never imported by the
project (it needs RecBole's old numpy/pandas/scipy, so it imports nothing of the project).

    <venv>/bin/python benchmark/recbole_worker.py --data-path D --dataset beauty --threads 1

It builds RecBole 1.2.1's Config, dataset, SASRec and Trainer directly (`recbole.quick_start`
imports ray), then answers one JSON command per stdin line with one JSON line on stdout:
"epoch" (one training epoch), "evaluate" (one full-sort evaluation of the test users), "info",
"quit". Each answer carries the CPU seconds of this process (`time.process_time`) and the wall
seconds of the call. RecBole's own printing goes to stderr, so stdout stays the protocol.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def config_dict(args) -> dict:
    """The RecBole settings of the comparison: the project's SASRec-CE sizes and leave-one-out."""
    return {
        "data_path": args.data_path,
        "checkpoint_dir": os.path.join(os.getcwd(), "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "loss_type": "CE",
        "train_neg_sample_args": None,  # CE over all items: no negative sampling
        "hidden_size": args.hidden,
        "inner_size": 4 * args.hidden,  # the project's feed-forward is 4d wide
        "n_layers": args.layers,
        "n_heads": args.heads,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "hidden_act": "gelu",
        "train_batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,  # sequential full sort: users per batch
        "learner": "adam",
        "learning_rate": 1e-3,
        # leave-one-out on each user's time-ordered sequence: last item test, second-to-last valid
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [5, 10, 20],
        "valid_metric": "NDCG@10",
        "device": "cpu",
        "use_gpu": False,
        "gpu_id": "",
        "worker": 0,
        "seed": 0,
        "reproducibility": True,
        "show_progress": False,
        "state": "WARNING",
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-path", required=True, help="folder holding DATASET/DATASET.inter")
    p.add_argument("--dataset", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=1024)
    args = p.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads command-line settings too

    protocol, sys.stdout = sys.stdout, sys.stderr  # anything RecBole prints goes to stderr

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.trainer.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    config = Config(model="SASRec", dataset=args.dataset, config_dict=config_dict(args))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    torch.set_num_threads(args.threads)  # again, in case RecBole's set-up changed it
    epochs = 0

    def info() -> dict:
        import numpy
        import pandas
        import recbole
        import scipy

        return {
            "recbole": recbole.__version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "pandas": pandas.__version__,
            "scipy": scipy.__version__,
            "threads": torch.get_num_threads(),
            "users": int(dataset.user_num - 1),  # RecBole counts the padding token
            "items": int(dataset.item_num - 1),
            "train_targets": len(train_data.dataset),
            "train_batches": len(train_data),
            "test_users": len(test_data.dataset),
            "sequence_width": int(train_data.dataset.inter_feat["item_id_list"].shape[1]),
            "parameters": sum(q.numel() for q in model.parameters()),
            "settings": {k: config[k] for k in ("eval_args", "MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_batch_size", "hidden_size", "inner_size", "n_layers", "n_heads", "hidden_dropout_prob", "attn_dropout_prob", "loss_type", "learning_rate")},
        }

    for line in sys.stdin:
        command = json.loads(line)["command"]
        wall, cpu = time.perf_counter(), time.process_time()
        if command == "epoch":
            loss = trainer._train_epoch(train_data, epochs)
            epochs += 1
            out = {"loss_sum": float(loss), "epoch": epochs}
        elif command == "evaluate":
            out = {"metrics": {k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=False).items()}}
        elif command == "info":
            out = info()
        elif command == "quit":
            break
        else:
            out = {"error": f"unknown command {command!r}"}
        out.update(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall)
        protocol.write(json.dumps(out) + "\n")
        protocol.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
