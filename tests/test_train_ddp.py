"""Data-parallel training: ``torchrun --nproc_per_node=2`` on CPU (gloo), tiny model, both
stages; the ranks must end with identical weights, and rank 0 alone writes the files."""
import os
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent("""
    import sys, torch
    from d2c_fast.train import TrainConfig, engine, train
    from d2c_fast.train.testing import tiny_train_dict
    out = sys.argv[1]
    orig = engine.StageTrainer.run
    def run(self, resume=True, extend=False):
        orig(self, resume, extend)
        torch.save(self.state_dict(), f"{out}/rank{self.info.rank}-{self.stage}.pt")
    engine.StageTrainer.run = run
    d = tiny_train_dict(ae_steps=4, diffusion_steps=4)
    d["checkpoint_every_steps"] = 2
    train(TrainConfig.from_dict(d), out, resume=False)
""")


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", str(script), str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for stage in ("ae", "diffusion"):
        a = torch.load(out / f"rank0-{stage}.pt", weights_only=True)
        b = torch.load(out / f"rank1-{stage}.pt", weights_only=True)
        ma = a["model"] if stage == "ae" else a["unet"]
        mb = b["model"] if stage == "ae" else b["unet"]
        # key-encoder BN running stats come from each rank's own last key batch; every
        # parameter, the queue and the (recalibrated) query encoder's buffers must agree
        keys = [k for k in ma if not (k.startswith("encoder_k.") and "running" in k
                                      or k.endswith("num_batches_tracked"))]
        diff = [k for k in keys if not torch.equal(ma[k], mb[k])]
        assert not diff, diff[:10]
        if stage == "ae":
            assert int(ma["queue_ptr"]) == (4 * 8) % 24      # both ranks' keys enqueued
        else:
            for k, v in a["ema"]["shadow"].items():
                assert torch.equal(v, b["ema"]["shadow"][k])
    assert (out / "model.safetensors").exists()
    assert not any(f.startswith(".tmp") for f in os.listdir(out))
