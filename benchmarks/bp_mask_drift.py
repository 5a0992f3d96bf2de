"""Diagnose BDWP with independent BP masks at high sparsity: per epoch, the mean loss, the test accuracy, the
share of the BP mask's weights that the FF mask keeps (for one layer), and every layer's weight norm.

Reproduces the 1:8 divergence of ``docs/bdwp.md`` ("1:8 and independent BP masks")::

    nice -n 10 python benchmarks/bp_mask_drift.py --fmt bf16 --seed 1 --lambda-w 2e-4     # diverges
    nice -n 10 python benchmarks/bp_mask_drift.py --fmt bf16 --seed 1                     # the default: stable
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from sat.sw.bdwp import SGD, LossScaler, nm_mask, parse_nm
from sat.sw.train import IMAGE_MODELS, TrainConfig, build_model, load_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--layer", default="conv2", help="the layer whose masks are compared")
    p.add_argument("--nm", default="1:8")
    p.add_argument("--fmt", default="bf16")
    p.add_argument("--bp-mask", default="independent")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lambda-w", default="auto")
    args = p.parse_args(argv)
    cfg = TrainConfig(model=args.model, nm=args.nm, fmt=args.fmt, bp_mask=args.bp_mask, seed=args.seed,
                      epochs=args.epochs, lambda_w=args.lambda_w)
    n, m = parse_nm(cfg.nm)
    data = load_dataset("digits", image=cfg.model in IMAGE_MODELS)
    model = build_model(cfg.model, cfg.seed)
    s = cfg.settings()
    opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.sr_ste_lambda)
    scaler = LossScaler.for_format(cfg.fmt)
    rng = np.random.default_rng(cfg.seed + 1_000_003)      # the batch order of sat.sw.train.train
    steps = math.ceil(len(data.x_train) / cfg.batch_size)
    for epoch in range(cfg.epochs):
        opt.lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
        order = rng.permutation(len(data.x_train))
        losses = [model.train_step(data.x_train[idx], data.y_train[idx], s, opt, scaler)["loss"]
                  for idx in (order[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(steps))]
        w = model.layer(args.layer).weight
        mff = nm_mask(w, n, m, axis=1)
        base = np.where(mff, w, 0) if cfg.bp_mask == "nested" else w
        mbp = nm_mask(base, n, m, axis=0)
        print(json.dumps({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                          "test_accuracy": float(np.mean(model.predict(data.x_test, s) == data.y_test)),
                          "bp_kept_also_ff_kept": round(float((mbp & mff).sum() / mbp.sum()), 3),
                          "weight_norms": {la.name: round(float(np.linalg.norm(la.weight)), 2)
                                           for la in model.gemm_layers},
                          "skipped_steps": scaler.skipped}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
