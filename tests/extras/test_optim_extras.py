"""The optim_extras extra: AGC bounds each unit's gradient by its share of the weight norm, SAM and Lookahead step as
their papers say; stacked with the core's recipes they resume bitwise (and train under DDP on two processes:
tests/test_distributed.py's ddp.yaml run stacks them), and they refuse before training what they cannot do."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import CONFIGS, DEFAULT, assert_refused_before_training
from helpers import TINY, resumed_equals_straight, stacked

pytestmark = pytest.mark.slow

RANDAUGMENT, ERASING = str(CONFIGS / "augment" / "randaugment.yaml"), str(CONFIGS / "augment" / "random_erasing.yaml")
DROP_PATH, LAYER_DECAY = str(CONFIGS / "model" / "resnet20_drop_path.yaml"), str(CONFIGS / "optim" / "layer_decay.yaml")
SAM, LOOKAHEAD = str(CONFIGS / "optim" / "sam.yaml"), str(CONFIGS / "optim" / "lookahead.yaml")
AGC, EMA = str(CONFIGS / "callbacks" / "agc.yaml"), str(CONFIGS / "callbacks" / "ema.yaml")
RESNET8 = "--model.init_args.net.init_args.depth=8"


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Module()
        self.net.body, self.net.head = nn.Linear(4, 3), nn.Linear(3, 2)


def test_agc_clips_each_unit_to_its_share_of_its_weight_norm_and_leaves_the_head():
    from proj.extras.optim_extras import AdaptiveGradientClipping

    torch.manual_seed(0)
    model = TwoLayers()
    weight = model.net.body.weight
    w = weight.detach()
    weight.grad = torch.stack([w[0] * 10, w[1] * 1e-4, w[2] * 0.05])  # one unit far too large
    head_grad = torch.full_like(model.net.head.weight, 100.0)
    model.net.head.weight.grad = head_grad.clone()
    model.net.body.bias.grad = model.net.head.bias.grad = None
    before = weight.grad.clone()
    agc = AdaptiveGradientClipping(clip_factor=0.1)
    agc.setup(SimpleNamespace(gradient_clip_val=None), model, "fit")
    agc.on_before_optimizer_step(None, model, None)
    ratio = weight.grad.norm(dim=1) / w.norm(dim=1)
    assert ratio[0] == pytest.approx(0.1, rel=1e-4)  # clipped to clip_factor x its weight norm
    assert torch.equal(weight.grad[1:], before[1:])  # units under the limit keep their gradient
    assert torch.equal(model.net.head.weight.grad, head_grad)  # the head is excluded


def quartic(w: torch.Tensor) -> torch.Tensor:
    return (w**4).sum()  # not quadratic: the gradient at the perturbed point differs in direction too


def test_sam_steps_from_the_weights_with_the_gradient_taken_rho_up_the_slope():
    from proj.extras.optim_extras import SAM

    w0 = torch.tensor([1.0, -2.0, 0.5])
    w = nn.Parameter(w0.clone())
    optimizer = SAM([w], base_optimizer="torch.optim.SGD", rho=0.1, lr=0.01)
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = quartic(w)
        loss.backward()
        calls.append(loss.item())
        return loss

    loss = optimizer.step(closure)
    g = 4 * w0**3
    expected = w0 - 0.01 * 4 * (w0 + 0.1 * g / g.norm()) ** 3  # the gradient at w0 + rho g / |g|, applied at w0
    assert torch.allclose(w.detach(), expected, rtol=1e-6)
    assert len(calls) == 2 and loss.item() == calls[0]  # the step reports the loss at the unperturbed weights


def test_lookahead_moves_the_slow_weights_alpha_of_the_way_every_k_steps():
    from proj.extras.optim_extras import Lookahead

    w0 = torch.tensor([1.0, -2.0])
    w = nn.Parameter(w0.clone())
    optimizer = Lookahead([w], base_optimizer="torch.optim.SGD", k=2, alpha=0.5, lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        (w**2).sum().backward()
        optimizer.step()
    fast = w0 * 0.8 * 0.8  # two plain SGD steps on w^2: w - 0.1 * 2w each
    assert torch.allclose(w.detach(), w0 + 0.5 * (fast - w0))


# --- with the core's recipes: bitwise resume -----------------------------------------------------------------------


def test_sam_and_agc_with_randaugment_drop_path_and_layer_decay_resume_bitwise(in_tmp):
    model = resumed_equals_straight(in_tmp, [*stacked(RANDAUGMENT, DROP_PATH, LAYER_DECAY, AGC, SAM), RESNET8, *TINY])
    groups = model.trainer.optimizers[0].param_groups  # SAM shares its base optimizer's groups
    head = next(g["initial_lr"] for g in groups if g["name"].endswith("head"))
    stem = next(g["initial_lr"] for g in groups if g["name"].endswith("stem"))
    assert stem / head == pytest.approx(0.75**4)


def test_lookahead_with_random_erasing_and_ema_resumes_bitwise(in_tmp):
    pytest.importorskip("proj.extras.averaging")  # EMA: another extra, which may have been taken out
    resumed_equals_straight(in_tmp, [*stacked(ERASING, LOOKAHEAD, EMA), *TINY])


# --- refusals -------------------------------------------------------------------------------------------------------

FIT = ["fit", "--config", DEFAULT]
REFUSED = [
    ("sam_with_accumulation", [*FIT, "--config", SAM, "--trainer.accumulate_grad_batches=2"], "accumulate_grad"),
    ("sam_with_mixed_precision", [*FIT, "--config", SAM, "--trainer.precision=bf16-mixed"], "precision"),
    ("sam_base_not_an_optimizer", [*FIT, "--config", SAM, "--config", "{tmp}/base.yaml"], "SAM.base_optimizer"),
    ("agc_with_norm_clipping", [*FIT, "--config", AGC, "--trainer.gradient_clip_val=1.0"], "gradient_clip_val"),
]  # fmt: skip


def write_case_files(run: Path) -> None:
    folder = run.parents[2]
    stage = "{optimizer: {class_path: proj.extras.optim_extras.SAM, init_args: {base_optimizer: torch.nn.Linear}}}"
    (folder / "base.yaml").write_text(f"model:\n  init_args:\n    optim:\n      stages: [{stage}]\n")
    freeze = (
        "{class_path: proj.extras.finetuning.Freeze, init_args: {pattern: ['net.stem.*', 'net.head.*'], epochs: [1]}}"
    )
    (folder / "epochs.yaml").write_text(f"trainer:\n  callbacks+:\n    - {freeze}\n")


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_sam_and_agc_refuse_what_they_cannot_do_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training((*case, write_case_files), tiny_run, tmp_path, monkeypatch, capsys)
