"""The core's techniques of docs/techniques.md, each checked to do what it says: the scarce digits keep a
stratified tenth of the training split, drop-path at rate 0 is the plain ResNet, layer decay gives each block
the lr of the block above times the decay, WSD's lr is torch's own at every epoch; the augmentation policies and
these resume bitwise and refuse bad values before training. (SAM, Lookahead and AGC: tests/extras/
test_optim_extras.py; gradual unfreezing: tests/extras/test_finetuning.py.)"""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from conftest import CONFIGS, DEFAULT, assert_refused_before_training, cli
from helpers import TINY, resumed_equals_straight, stacked

pytestmark = pytest.mark.slow

TRIVIAL, RANDAUGMENT = str(CONFIGS / "augment" / "trivialaugment.yaml"), str(CONFIGS / "augment" / "randaugment.yaml")
DROP_PATH, LAYER_DECAY = str(CONFIGS / "model" / "resnet20_drop_path.yaml"), str(CONFIGS / "optim" / "layer_decay.yaml")
WSD = str(CONFIGS / "optim" / "adamw_wsd.yaml")
RESNET8 = "--model.init_args.net.init_args.depth=8"


# --- the harder setting -------------------------------------------------------------------------------------------


def test_scarce_digits_keep_a_stratified_tenth_of_the_training_split_and_the_same_test_split():
    from proj.data import DigitsDataModule, ScarceDigitsDataModule

    full, scarce = DigitsDataModule(), ScarceDigitsDataModule(train_fraction=0.1)
    full.setup(), scarce.setup()
    for split in ("val", "test"):  # recipes are compared on the same samples as the full runs
        assert torch.equal(full.indices[split], scarce.indices[split])
    kept = torch.bincount(scarce.splits["train"].tensors[1], minlength=10)
    whole = torch.bincount(full.splits["train"].tensors[1], minlength=10)
    assert ((kept - whole * 0.1).abs() <= 1).all(), (kept, whole)
    assert set(scarce.indices["train"].tolist()) < set(full.indices["train"].tolist())


# --- drop-path, layer decay -----------------------------------------------------------------------------------------


def test_drop_path_at_rate_0_is_the_plain_resnet_and_drops_whole_residual_branches_at_its_rate():
    from proj.nets import ResNet
    from proj.nets.blocks import DropPath

    x = torch.randn(16, 1, 8, 8)
    nets = {}
    for rate in (None, 0.0, 0.5):
        torch.manual_seed(0)
        nets[rate] = ResNet((1, 8, 8), 10, depth=8, **({} if rate is None else {"drop_path": rate}))
    assert torch.equal(nets[0.5].eval()(x), nets[None].eval()(x))  # evaluation uses every block
    assert torch.equal(nets[None].train()(x), nets[0.0](x))  # training mode: at rate 0 nothing is drawn or dropped
    assert nets[0.5].state_dict().keys() == nets[None].state_dict().keys()  # checkpoints load into each other
    assert [block.drop_path.p for block in nets[0.5].body] == [0.0, 0.25, 0.5]  # rising with depth, timm's rule
    torch.manual_seed(1)
    out = DropPath(0.3).train()(torch.ones(20_000, 3, 2, 2)).flatten(1)
    assert ((out == 0).all(1) | (out == 1 / 0.7).all(1)).all()  # each sample's branch dropped whole or kept whole
    assert abs((out[:, 0] == 0).float().mean().item() - 0.3) < 0.02
    assert abs(out.mean().item() - 1.0) < 0.03  # the expected output is unchanged


def test_layer_decay_gives_each_block_the_lr_of_the_block_above_times_the_decay():
    from proj.optim import build_optimizer

    model = cli(*stacked(LAYER_DECAY), run=False).model
    optimizer = build_optimizer(model, model.optim, model.stages[0])
    depth = {"stem": 0, "body.0": 1, "body.1": 2, "body.3": 3, "body.4": 4, "head": 5}  # body.2: pooling
    for name, p in model.net.named_parameters():
        block = next(b for b in sorted(depth, key=len, reverse=True) if name.startswith(b + "."))
        (lr,) = {g["lr"] for g in optimizer.param_groups if any(q is p for q in g["params"])}
        assert lr == pytest.approx(3e-3 * 0.75 ** (5 - depth[block]), rel=1e-9), name
    no_decay = [g for g in optimizer.param_groups if g.get("weight_decay") == 0.0]
    assert all(p.ndim == 1 for g in no_decay for p in g["params"]) and no_decay  # no_decay_1d still holds


# --- WSD's lr and bitwise resumes ---------------------------------------------------------------------------------


class LrPerEpoch(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def wsd_yaml(folder: Path) -> str:
    """The WSD recipe for a 4-epoch run: warmup in epoch 0, stable in epoch 1, the decay over epochs 2-3."""
    path = folder / "wsd.yaml"
    path.write_text(Path(WSD).read_text().replace("milestones: [2, 24]", "milestones: [1, 2]"))
    return str(path)


def test_randaugment_drop_path_and_layer_decay_resume_bitwise(in_tmp):
    model = resumed_equals_straight(in_tmp, [*stacked(RANDAUGMENT, DROP_PATH, LAYER_DECAY), RESNET8, *TINY])
    groups = model.trainer.optimizers[0].param_groups  # what the schedule scales each group's lr from
    head = next(g["initial_lr"] for g in groups if g["name"].endswith("head"))
    stem = next(g["initial_lr"] for g in groups if g["name"].endswith("stem"))
    assert stem / head == pytest.approx(0.75**4)  # stem, body.0 .. body.2, head


def test_wsd_lr_is_torchs_own_chain_at_every_epoch_and_resumes_bitwise_with_trivialaugment(in_tmp):
    probe = LrPerEpoch()
    resumed_equals_straight(in_tmp, [*stacked(TRIVIAL, wsd_yaml(in_tmp)), *TINY, "--trainer.max_epochs=4"], [probe])
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=3e-3)
    lr_scheduler = torch.optim.lr_scheduler
    chain = lr_scheduler.SequentialLR(
        optimizer,
        [
            lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=1),
            lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=1),
            lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.01, total_iters=2),
        ],
        milestones=[1, 2],
    )
    expected = []
    for _ in range(4):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), chain.step()
    assert probe.lrs == pytest.approx(expected, rel=1e-9)
    assert probe.lrs[0] < probe.lrs[1] == probe.lrs[2] > probe.lrs[3]  # warmup, stable, decay


# --- refusals -------------------------------------------------------------------------------------------------------


FIT = ["fit", "--config", DEFAULT]
REFUSED = [
    ("layer_decay_above_1", [*FIT, "--model.init_args.optim.layer_decay=1.5"], "optim.layer_decay"),
    ("drop_path_of_1", [*FIT, "--config", DROP_PATH, "--model.init_args.net.init_args.drop_path=1.0"], "drop_path"),
    ("scarce_fraction_0", [*FIT, "--config", str(CONFIGS / "data" / "scarce_digits.yaml"),
                           "--data.init_args.train_fraction=0"], "data.train_fraction"),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_technique_refuses_a_bad_value_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)
