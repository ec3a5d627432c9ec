"""Several ranks give one process's result (facestyle.distributed; docs/distributed.md).

Two CPU ranks with gloo, launched by torchrun as a user would: the level-2 pairs (Eq. 5) and the reference
embeddings (section 3.3) shard their batches and equal a one-process run; a 2-rank finetune (Eq. 3) splits the
global batch, checkpoints from rank 0, resumes, and takes the steps one process takes.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_worker as W
from facestyle import hub
from helpers import random_mini_files

HERE = Path(__file__).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(_port()), *args]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def test_shard_and_slice_cover_every_item_once():
    from facestyle.distributed import Ranks, local_slice, shard

    parts = [shard(7, Ranks(r, 3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert [local_slice(4, Ranks(r, 2)) for r in range(2)] == [slice(0, 2), slice(2, 4)]
    with pytest.raises(ValueError, match="does not split"):
        local_slice(4, Ranks(0, 3))


def test_level2_pairs_on_two_ranks_equal_one_process_and_resume(tmp_path):
    torch.set_num_threads(1)
    one = W.level2()
    torchrun(str(HERE / "distributed_worker.py"), "level2", str(tmp_path / "two.pt"), str(tmp_path / "batches"))
    two = torch.load(tmp_path / "two.pt")
    assert torch.allclose(one["zplus"], two["zplus"], atol=1e-5) and torch.allclose(one["wplus"], two["wplus"],
                                                                                    atol=1e-5)
    assert torch.allclose(one["loss_end"], two["loss_end"], atol=1e-5) and two["reused"] == 0
    # Three batches of two on two ranks, each saved by the rank that made it: a rerun finds them all.
    assert len(list((tmp_path / "batches").glob("batch_*.pt"))) == 3
    (tmp_path / "batches" / "batch_00002_00004.pt").unlink()  # as if rank 1 was killed before its batch was saved
    torchrun(str(HERE / "distributed_worker.py"), "level2", str(tmp_path / "again.pt"), str(tmp_path / "batches"))
    again = torch.load(tmp_path / "again.pt")
    assert again["reused"] == 2 and torch.allclose(again["zplus"], one["zplus"], atol=1e-5)


def test_reference_embeddings_on_two_ranks_equal_one_process(tmp_path):
    torch.set_num_threads(1)
    one = W.embed(tmp_path / "cache-one")
    torchrun(str(HERE / "distributed_worker.py"), "embed", str(tmp_path / "two.pt"), str(tmp_path / "cache-two"))
    two = torch.load(tmp_path / "two.pt")
    assert two["inverted"] == 3 and torch.allclose(one["lpips"], two["lpips"], atol=1e-4)
    assert torch.allclose(one["w"], two["w"], atol=1e-4)
    assert len(list((tmp_path / "cache-two").rglob("*.pt"))) == 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    _, gpath, ipath = random_mini_files(tmp_path_factory.mktemp("dist-finetune"))
    return str(gpath), str(ipath)


def _images(path) -> torch.Tensor:
    g = hub.load_generator(path, "cpu").g_ema
    z = torch.randn(4, g.style_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return g.synthesis(g.mapping(z), noise_mode="const")


def test_finetune_on_two_ranks_checkpoints_from_rank_0_and_resumes(files, tmp_path):
    """`torchrun -m facestyle finetune`: killed at step 2 (here: asked for 2), rerun for 4, equals 4 straight."""
    common = ["--style", "anime", "--variant", "sc", "--generator", files[0], "--identity", files[1],
              "--batch", "2", "--device", "cpu", "--threads", "1", "--sample-every", "0", "--lpips-size", "64"]
    torchrun("-m", "facestyle", "finetune", *common, "--iters", "2", "--out", str(tmp_path / "a"))
    assert torch.load(tmp_path / "a" / "state.pt", weights_only=True)["step"] == 2
    run = torchrun("-m", "facestyle", "finetune", *common, "--iters", "4", "--out", str(tmp_path / "a"))
    assert "resumed" in run.stdout + run.stderr
    assert hub.safe_load(tmp_path / "a" / "generator.pt")["meta"]["ranks"] == 2
    torchrun("-m", "facestyle", "finetune", *common, "--iters", "4", "--out", str(tmp_path / "b"))
    assert (_images(tmp_path / "a" / "generator.pt") - _images(tmp_path / "b" / "generator.pt")).abs().max() < 1e-4


def test_finetune_on_two_ranks_takes_one_process_steps(files, tmp_path, monkeypatch):
    """Two ranks with one image each take the steps one process takes with both (D's minibatch std over groups
    of one image in both runs: see distributed_worker.one_image_mbstd)."""
    torch.set_num_threads(1)
    torchrun(str(HERE / "distributed_worker.py"), "finetune", str(tmp_path / "two.pt"), str(tmp_path / "two"),
             *files, "4")
    W.one_image_mbstd(monkeypatch)
    one = _images(W.finetune(str(tmp_path / "one"), *files, 4)["path"])
    # Adam's first steps move each weight by about lr whatever its gradient's size, so float noise in near-zero
    # gradients (another summation order) shows up; the yardsticks are how far 4 steps move G', and what one
    # rank's part alone would give (the same run at batch 1, no averaging).
    two = _images(tmp_path / "two" / "generator.pt")
    alone = _images(W.finetune(str(tmp_path / "alone"), *files, 4, batch=1)["path"])
    start = _images(files[0])
    gap, moved, wrong = (two - one).abs().mean(), (one - start).abs().mean(), (alone - one).abs().mean()
    assert gap < 0.1 * moved and gap < 0.2 * wrong, (gap, moved, wrong)
