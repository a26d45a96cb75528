"""``d2c-fast train`` and ``export``: train a D2C model, export a run folder.

    d2c-fast train d2c_fast/configs/builtin_train.json -o runs/builtin [--resume]
        [--stage ae|diffusion|guide|all] [--max-minutes M] [--threads N] [--export PATH]
    torchrun --nproc_per_node=2 -m d2c_fast train CONFIG -o OUT      # data-parallel
"""
from __future__ import annotations

import os
import sys

from ..checkpoint import UNET_DTYPES
from ..images import check_output_file
from ..train.config import TrainConfig
from ..train.pipeline import export_run, train
from .options import add_threads


def cmd_train(args) -> int:
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"-o {args.output!r} is a file; give the run folder")
    tc = TrainConfig.load(args.config)
    if args.threads is not None:
        tc.threads = args.threads
    if args.device is not None:
        tc.device = args.device
    if args.no_progress:
        tc.progress = False
    try:
        path = train(tc, args.output, resume=args.resume, stage=args.stage,
                     max_minutes=args.max_minutes, export_path=args.export,
                     allow_short=args.allow_short)
    except FileExistsError as e:
        print(f"d2c-fast: error: {e}", file=sys.stderr)
        return 2
    if path:
        print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    if args.output:
        check_output_file(args.output)
    print(f"wrote {export_run(args.run_dir, args.output, args.unet_dtype)}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a D2C model (autoencoder + MoCo, latent "
                       "diffusion, export)")
    p.add_argument("config", help="training config JSON (d2c_fast/configs/builtin_train.json: "
                   "the built-in model; smoke_train.json: a 2-minute smoke test)")
    p.add_argument("-o", "--output", required=True, help="run folder (checkpoints, logs, export)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT (finished stages are skipped)")
    p.add_argument("--stage", default="all", choices=["all", "ae", "diffusion", "guide"])
    p.add_argument("--max-minutes", type=float, default=None,
                   help="total wall-clock budget (overrides the config's max_minutes); one "
                   "that cannot reach the minimum steps is refused with an estimate; with "
                   "--resume on a finished run: train the prior this much longer")
    p.add_argument("--allow-short", action="store_true", help="train even when the budget "
                   "is below the estimated minimum (warns; the model may sample noise)")
    add_threads(p, help="torch threads per process")
    p.add_argument("--device", default=None, help="cpu, cuda, auto (default: config)")
    p.add_argument("--export", default=None, help="export path (default OUTPUT/model.safetensors)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("export", help="export a training run folder to .safetensors")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--unet-dtype", default=None, choices=sorted(UNET_DTYPES),
                   help="U-Net weights in the file (default: the run's export_unet_dtype)")
    p.set_defaults(fn=cmd_export)
