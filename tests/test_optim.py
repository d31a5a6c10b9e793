"""Parameter groups, the L1 penalty, and config errors raised before any training."""

import pytest
import torch

from proj.models import Classifier
from proj.nets import SmallCNN
from proj.optim import OptimConfig, check_stages_start_in_run, parse_stages

from conftest import CONFIGS, DEFAULT, QUICK, cli

ADAMW = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, "weight_decay": 0.1}}


def model(**optim) -> Classifier:
    stages = optim.pop("stages", [{"optimizer": ADAMW}])
    return Classifier(SmallCNN, num_outputs=10, input_shape=(1, 8, 8), optim=OptimConfig(stages=stages, **optim))


def configured(
    m: Classifier, precision: str = "32-true", gradient_clip_val: float | None = None
) -> tuple[torch.optim.Optimizer, list[dict]]:
    class FakeTrainer:  # configure_optimizers reads only these when no horizon is left at 0
        world_size = 1

    FakeTrainer.precision, FakeTrainer.gradient_clip_val = precision, gradient_clip_val
    m.trainer = FakeTrainer()  # type: ignore[assignment]
    (opt,), schedulers = m.configure_optimizers()
    return opt, schedulers


def optimizer_of(m: Classifier) -> torch.optim.Optimizer:
    return configured(m)[0]


def group_of(opt: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict:
    return next(g for g in opt.param_groups if any(p is param for p in g["params"]))


def test_biases_and_norm_weights_get_no_weight_decay():
    m = model()
    opt = optimizer_of(m)
    for name, p in m.named_parameters():
        expected = 0.0 if p.ndim <= 1 else 0.1
        assert group_of(opt, p)["weight_decay"] == expected, name
    bn = m.net.stem[1]
    assert isinstance(bn, torch.nn.BatchNorm2d) and group_of(opt, bn.weight)["weight_decay"] == 0.0


def test_group_rules_scale_lr_and_set_weight_decay_first_match_wins():
    rules = [
        {"pattern": "net.stem.*", "lr_scale": 0.1},
        {"pattern": "net.head.*", "weight_decay": 0.5, "lr_scale": 2.0},
        {"pattern": "net.*", "lr_scale": 3.0},  # would also match stem and head: first match wins
    ]
    m = model(groups=rules)
    opt = optimizer_of(m)
    stem_w, head_w = m.net.stem[0].weight, m.net.head[3].weight
    body_w = m.net.body[0][0].weight
    assert group_of(opt, stem_w)["lr"] == pytest.approx(0.001)
    assert group_of(opt, stem_w)["weight_decay"] == 0.1
    assert group_of(opt, m.net.stem[1].bias)["weight_decay"] == 0.0  # 1-D: no decay inside a rule too
    assert group_of(opt, head_w)["lr"] == pytest.approx(0.02)
    assert group_of(opt, head_w)["weight_decay"] == 0.5
    assert group_of(opt, m.net.head[3].bias)["weight_decay"] == 0.5  # the rule's explicit value wins
    assert group_of(opt, body_w)["lr"] == pytest.approx(0.03)
    # every parameter is in exactly one group
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))


def test_a_second_optimizer_does_not_inherit_the_first_ones_scaled_lr():
    m = model(groups=[{"pattern": "net.stem.*", "lr_scale": 0.1}])
    first, second = optimizer_of(m), optimizer_of(m)
    assert group_of(second, m.net.stem[0].weight)["lr"] == pytest.approx(0.001)
    assert first is not second


def test_a_group_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"optim.groups\[0\].pattern='net.stm.\*' matches no parameter"):
        optimizer_of(model(groups=[{"pattern": "net.stm.*", "lr_scale": 0.1}]))


def test_l1_adds_exactly_l1_times_the_sum_of_absolute_weights():
    torch.manual_seed(0)
    plain, penalised = model(), model(l1=1e-3)
    penalised.load_state_dict(plain.state_dict())
    plain.eval(), penalised.eval()  # no dropout noise, BatchNorm uses running stats: same forward twice
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    difference = penalised.training_step(batch, 0) - plain.training_step(batch, 0)
    weights = [p for p in plain.net.parameters() if p.ndim > 1]  # biases / norm weights excluded (no_decay_1d)
    expected = 1e-3 * sum(p.abs().sum() for p in weights)
    assert difference.item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 0


# --- errors: each raised before training, naming the key and the fix ------------------------------------


def cli_error(capsys, *args: str) -> str:
    """Run the CLI and return the error text, wherever it was reported (exception or parser message)."""
    with pytest.raises((SystemExit, ValueError)) as info:
        cli("fit", "--config", DEFAULT, *QUICK, *args)
    return str(info.value) + capsys.readouterr().err


def write(tmp, text: str) -> str:
    path = tmp / "override.yaml"
    path.write_text(text)
    return str(path)


SGD = "        - optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}\n"


def stage_yaml(stage: str) -> str:
    return "model:\n  init_args:\n    optim:\n      stages:\n" + stage


def test_misspelled_top_level_key_is_named(in_tmp, capsys):
    err = cli_error(capsys, "--model.init_args.label_smothing=0.1")
    assert "label_smothing" in err
    assert not (in_tmp / "logs").exists()  # nothing started


def test_misspelled_stage_key_is_named_with_a_suggestion(in_tmp, capsys):
    yaml = stage_yaml(SGD + "          warmup_step: 5\n")
    err = cli_error(capsys, "--config", write(in_tmp, yaml))
    assert "optim.stages[0].warmup_step: unknown key (did you mean 'warmup_steps'?)" in err


def test_misspelled_optimizer_argument_is_named(in_tmp, capsys):
    yaml = stage_yaml("        - optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1, momentun: 0.9}}\n")
    err = cli_error(capsys, "--config", write(in_tmp, yaml))
    assert "optim.stages[0].optimizer.init_args.momentun: SGD has no argument 'momentun'" in err
    assert "did you mean 'momentum'?" in err


def test_wrong_type_is_named(in_tmp, capsys):
    err = cli_error(capsys, "--trainer.max_epochs=ten")
    assert "trainer.max_epochs" in err and "ten" in err
    yaml = stage_yaml(SGD + "          warmup_steps: ten\n")
    err = cli_error(capsys, "--config", write(in_tmp, yaml))
    assert "optim.stages[0].warmup_steps='ten' must be an integer" in err


def test_warmup_with_onecycle_is_refused(in_tmp, capsys):
    yaml = stage_yaml(
        SGD + "          lr_scheduler:\n"
        "            {class_path: torch.optim.lr_scheduler.OneCycleLR, init_args: {max_lr: 0.1, total_steps: 0}}\n"
        "          interval: step\n"
        "          warmup_steps: 10\n"
    )
    err = cli_error(capsys, "--config", write(in_tmp, yaml))
    assert "optim.stages[0].warmup_steps=10 does not compose with OneCycleLR" in err
    assert "pct_start" in err  # the fix: OneCycle's own warm-up


def test_a_scheduler_without_interval_is_refused(in_tmp, capsys):
    yaml = stage_yaml(
        SGD + "          lr_scheduler: {class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 3}}\n"
    )
    err = cli_error(capsys, "--config", write(in_tmp, yaml))
    assert "optim.stages[0].interval=None: set it to 'step' or 'epoch'" in err


def fit_error(in_tmp, *args: str) -> tuple[str, object]:
    """Errors found once the trainer exists (in configure_optimizers): still before the first batch."""
    result = cli("--config", DEFAULT, *QUICK, *args, run=False)
    with pytest.raises(ValueError) as info:
        result.trainer.fit(result.model, datamodule=result.datamodule)
    assert result.trainer.global_step == 0
    return str(info.value), result


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_lbfgs_with_mixed_precision_is_refused(in_tmp, precision):
    err, _ = fit_error(in_tmp, "--config", str(CONFIGS / "optim" / "lbfgs.yaml"), f"--trainer.precision={precision}")
    # On a CPU Lightning turns 16-mixed into bf16-mixed; the message names the precision in force.
    assert "torch.optim.LBFGS does not work with trainer.precision='" in err and "-mixed'" in err
    assert "optim.stages[0].optimizer" in err


def test_lbfgs_with_gradient_accumulation_is_refused_before_a_stale_gradient_is_summed(in_tmp):
    args = ["--config", str(CONFIGS / "optim" / "lbfgs.yaml"), "--trainer.accumulate_grad_batches=2"]
    err, _ = fit_error(in_tmp, *args)
    assert "torch.optim.LBFGS" in err and "trainer.accumulate_grad_batches=2" in err and "set" in err


def test_step_schedule_with_unknown_horizon_is_refused(in_tmp):
    # max_epochs=-1 without max_steps: the run has no known length, so T_max=0 cannot be filled.
    err, _ = fit_error(in_tmp, "--trainer.max_epochs=-1")
    assert "optim.stages[0].lr_scheduler.init_args.T_max=0 asks for the stage's length in steps" in err
    assert "Give the horizon explicitly" in err


def test_lr_scale_applies_to_schedulers_that_set_their_own_lr():
    # OneCycleLR and CyclicLR overwrite the group lr from max_lr / base_lr: the scale must reach those too.
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}
    for sched in (
        {"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.1, "total_steps": 20}},
        {"class_path": "torch.optim.lr_scheduler.CyclicLR", "init_args": {"base_lr": 0.01, "max_lr": 0.1}},
    ):
        stage = {"optimizer": sgd, "lr_scheduler": sched, "interval": "step"}
        m = model(stages=[stage], groups=[{"pattern": "net.head.*", "lr_scale": 0.1}])
        opt, schedulers = configured(m)
        head, body = group_of(opt, m.net.head[3].weight), group_of(opt, m.net.body[0][0].weight)
        for _ in range(10):
            assert head["lr"] == pytest.approx(0.1 * body["lr"], rel=1e-9), sched["class_path"]
            opt.step()
            for config in schedulers:
                config["scheduler"].step()
        assert body["lr"] != pytest.approx(0.1)  # the schedule moved


def test_short_name_reduce_lr_on_plateau_is_lightnings():
    from lightning.pytorch.cli import ReduceLROnPlateau

    from proj.optim import import_class

    assert import_class("ReduceLROnPlateau", "x") is ReduceLROnPlateau


def test_an_import_error_inside_the_users_module_is_shown(tmp_path, monkeypatch):
    (tmp_path / "my_optim.py").write_text("import not_installed_package\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from proj.optim import import_class

    with pytest.raises(ModuleNotFoundError, match="not_installed_package"):
        import_class("my_optim.Fancy", "x")


PLATEAU = "          lr_scheduler: {class_path: ReduceLROnPlateau, init_args: {monitor: val/loss}}\n"


def test_plateau_per_step_is_refused(in_tmp, capsys):
    err = cli_error(capsys, "--config", write(in_tmp, stage_yaml(SGD + PLATEAU + "          interval: step\n")))
    assert "optim.stages[0].interval='step': ReduceLROnPlateau watches a metric logged once per epoch" in err


def test_plateau_on_a_val_metric_without_validation_every_epoch_is_refused(in_tmp):
    override = write(in_tmp, stage_yaml(SGD + PLATEAU + "          interval: epoch\n"))
    err, _ = fit_error(in_tmp, "--config", override, "--trainer.check_val_every_n_epoch=2")
    assert "monitor='val/loss' exists only after validation" in err and "check_val_every_n_epoch=2" in err


@pytest.mark.parametrize(("interval", "expected"), [("step", 5), ("epoch", 2)])
def test_max_steps_shortens_the_filled_horizon(in_tmp, interval, expected):
    cosine = "          lr_scheduler: {class_path: CosineAnnealingLR, init_args: {T_max: 0}}\n"
    override = write(in_tmp, stage_yaml(SGD + cosine + f"          interval: {interval}\n"))
    result = cli(
        "--config", DEFAULT, *QUICK, "--config", override, "--trainer.max_epochs=10", "--trainer.max_steps=5", run=False
    )
    result.trainer.fit(result.model, datamodule=result.datamodule)
    # 3 steps per epoch: 5 steps end inside epoch 2, whatever max_epochs says
    assert result.trainer.lr_scheduler_configs[0].scheduler.T_max == expected


def test_checkpoint_of_a_model_built_in_python_loads_weights_only(in_tmp):
    import lightning.pytorch as L

    from proj.data import DigitsDataModule

    m = model(groups=[{"pattern": "net.head.*", "lr_scale": 0.5}])
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False, enable_progress_bar=False
    )
    trainer.fit(m, datamodule=DigitsDataModule())
    trainer.save_checkpoint("m.ckpt")
    checkpoint = torch.load("m.ckpt", weights_only=True)  # refuses any pickled class or object
    assert checkpoint["hyper_parameters"]["net"]["class_path"] == "proj.nets.cnn.SmallCNN"
    again = Classifier.load_from_checkpoint("m.ckpt")
    assert again.optim.groups == m.optim.groups
    assert torch.equal(again.net.head[3].weight, m.net.head[3].weight)


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scales_with_the_world_size(rule, factor):
    m = model(scale_lr=rule, groups=[{"pattern": "net.head.*", "lr_scale": 0.5}])
    m.trainer = type("FakeTrainer", (), {"precision": "32-true", "world_size": 4})()
    (opt,), _ = m.configure_optimizers()
    assert group_of(opt, m.net.body[0][0].weight)["lr"] == pytest.approx(0.01 * factor)
    assert group_of(opt, m.net.head[3].weight)["lr"] == pytest.approx(0.005 * factor)


@pytest.mark.parametrize(
    "init_args, fused",
    [({}, True), ({"fused": False}, False), ({"foreach": True}, None)],
    ids=["default", "opted-out", "foreach-chosen"],
)
def test_fused_kernel_is_the_default_unless_the_config_chooses(init_args, fused):
    stage = {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, **init_args}}}
    assert optimizer_of(model(stages=[stage])).defaults["fused"] is fused


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_fused_is_left_out_under_mixed_precision_and_refused_with_clipping(precision):
    # Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer.
    for clip in (None, 1.0):
        opt, _ = configured(model(), precision=precision, gradient_clip_val=clip)
        assert not opt.defaults["fused"]
    stage = {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"fused": True}}}
    with pytest.raises(ValueError, match=r"optim.stages\[0\].optimizer.init_args.fused=true cannot be combined"):
        configured(model(stages=[stage]), precision=precision, gradient_clip_val=1.0)


def test_an_optimizer_without_a_fused_kernel_keeps_torchs_default():
    stage = {"optimizer": {"class_path": "torch.optim.Adagrad", "init_args": {"lr": 0.01}}}  # no CUDA kernel
    assert not optimizer_of(model(stages=[stage])).defaults["fused"]


def test_a_later_stage_must_start_within_the_run():
    adam, sgd = {"class_path": "torch.optim.Adam"}, {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}
    stages = parse_stages(OptimConfig(stages=[{"optimizer": adam}, {"optimizer": sgd, "start_epoch": 3}]))
    with pytest.raises(ValueError, match=r"stages\[1\]\.start_epoch=3 lies beyond trainer.max_epochs=2"):
        check_stages_start_in_run(stages, 2)
    assert "resumed with a larger max_epochs" in check_stages_start_in_run(stages, 3)[0]  # a run split there
    assert check_stages_start_in_run(stages, 4) == check_stages_start_in_run(stages, None) == []
