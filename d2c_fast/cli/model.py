"""``d2c-fast convert``, ``info`` and ``demo``: a model's file, its description, the README's
first command."""
from __future__ import annotations

import os

from ..checkpoint import convert, latent_norm_kind
from ..demo import run_demo
from ..images import check_output_file
from ..ops import backend_info
from .options import (add_device_args, add_model_args, add_overwrite, add_threads, apply_threads,
                      check_new_file, open_sampler)


def cmd_convert(args) -> int:
    check_new_file(args, args.output)
    m = convert(args.ckpt, args.config, args.output)
    print(f"wrote {args.output} (latent {tuple(m.config.latent_shape)}, "
          f"resolution {m.config.resolution})")
    return 0


def cmd_info(args) -> int:
    s = open_sampler(args)
    ae = s.config.autoencoder
    n_ae = sum(p.numel() for p in s.autoencoder.parameters())
    n_un = sum(p.numel() for p in s.unet_model.parameters())
    print(f"model: {args.ckpt}")
    print(f"  resolution {ae.resolution}, arch {ae.arch_instance}, num_x_bits {ae.num_x_bits}")
    print(f"  latent {s.latent_shape}, U-Net ch {s.config.unet.ch} x {s.config.unet.ch_mult}")
    print(f"  parameters: autoencoder {n_ae / 1e6:.2f} M, U-Net {n_un / 1e6:.2f} M")
    print(f"  latent standardisation: per {latent_norm_kind(s.std)} {tuple(s.std.shape)}")
    if s.guide_model is not None:
        n_g = sum(p.numel() for p in s.guide_model.parameters())
        print(f"  guide prior (autoguidance): U-Net ch {s.config.guide.ch}, {n_g / 1e6:.2f} M, "
              f"default guidance {s.guidance:g}")
        if s.guidance_rescale > 0:
            tr = s.guidance_rescale_t
            print(f"  guidance rescale {s.guidance_rescale:g} at "
                  f"{'t in [%d, %d]' % tr if tr is not None else 'every t'}")
    print(f"kernels on {args.device}:")
    for op, info in backend_info(args.device).items():
        print(f"  {op}: {info['kernel']} ({info['reason']})")
    return 0


def cmd_demo(args) -> int:
    check_output_file(args.output)
    if os.path.lexists(args.output):    # the demo's picture is remade, and says so
        print(f"replacing {args.output} (the demo's picture is remade on every run)")
    apply_threads(args)
    return run_demo(args.output, device=args.device, impl=args.impl)


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="official model.ckpt + YAML -> native .safetensors")
    p.add_argument("ckpt")
    p.add_argument("--config", required=True)
    p.add_argument("-o", "--output", required=True)
    add_overwrite(p)
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("info", help="describe a model and the kernels that will serve it")
    add_model_args(p)
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("demo", help="the README's first command: a PNG of encodes, edits, samples")
    p.add_argument("-o", "--output", default="demo.png", help="the PNG to write (default: "
                   "demo.png; an existing one is replaced, and the command says so)")
    add_device_args(p)
    add_threads(p)
    p.set_defaults(fn=cmd_demo)
