"""camfusion-train under torchrun with 2 CPU processes (DDP over gloo, loopback only)."""
import json
import os
import socket
import subprocess
import sys

import torch
import yaml
from safetensors.torch import load_file

from camfusion_ros.core.camfusion import build_camfusion
from camfusion_ros.core.camfusion.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_on_cpu(tmp_path):
    from test_training import TINY

    doc = json.loads(json.dumps(TINY))
    doc["data"]["root"] = str(tmp_path / "data")
    doc["max_steps"] = 4
    doc["checkpoint_every"] = 2
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "camfusion_ros.training.train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and state["extra"]["world_size"] == 2
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4]
    model, mcfg = load_checkpoint(tmp_path / "run" / "final")
    # The final weights differ from the seeded initialisation: the ranks really trained.
    torch.manual_seed(doc["seed"] if "seed" in doc else 0)
    init = build_camfusion(mcfg).state_dict()
    assert not torch.equal(init["proj_in.weight"], model.state_dict()["proj_in.weight"])
    state_t = load_file(str(tmp_path / "run" / "checkpoint" / "state.safetensors"))
    assert any(k.startswith("optim.") for k in state_t)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["step"] == 4
