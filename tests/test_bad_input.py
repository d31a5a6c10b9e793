"""The bad-input table of the core: every public option given a wrong value, a bad checkpoint, a bad --resume.

Each case must fail before training, in one or two lines that name the key or path, with a non-zero exit, no
Python traceback, no checkpoint written and no run directory (version_<n>) left behind
(conftest.assert_refused_before_training). Bad data files (image folders, CIFAR batches, CSV contents) have their
own table in test_bad_data.py; each extra's options, theirs in its tests.
"""

from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, DEFAULT, QUICK, assert_refused_before_training

pytestmark = pytest.mark.xdist_group("tiny_run")  # the session's tiny run is built once, on one worker

FIT = ["fit", "--config", DEFAULT, *QUICK]
STAGE = "{class_path: torch.optim.AdamW, init_args: {lr: 0.001}}"


def stages(*items: str) -> str:
    return f"--model.init_args.optim.stages=[{', '.join(items)}]"


def no_last(run: Path) -> None:
    (run / "checkpoints" / "last.ckpt").unlink()


def truncated_last(run: Path) -> None:
    last = run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.unlink()  # a link to best-00.ckpt: replace it by a half-written file
    last.write_bytes(data[: len(data) // 2])


def other_class_checkpoint(run: Path) -> None:
    """A checkpoint whose hyper-parameters say it holds another model class (a regressor)."""
    path = run / "checkpoints" / "best-00.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "proj.models.Regressor"
    ckpt["hyper_parameters"].pop("label_smoothing", None)
    torch.save(ckpt, run / "other.ckpt")


# (id, arguments: {run} is a copy of a trained run and {tmp} this case's folder, what the message must name,
#  what to prepare in the run copy)
CASES = [
    # model.init_args.*
    ("label_smoothing_type", [*FIT, "--model.init_args.label_smoothing=lots"], "model.init_args.label_smoothing"),
    ("net_class", [*FIT, "--model.init_args.net.class_path=proj.nets.NoSuchNet"], "NoSuchNet"),
    ("model_class", [*FIT, "--model.class_path=proj.models.NoSuchTask"], "NoSuchTask"),
    ("channels_last", [*FIT, "--model.init_args.channels_last=sometimes"], "model.init_args.channels_last"),
    ("net_widths_type", [*FIT, "--model.init_args.net.init_args.widths=wide"], "widths"),
    # optim: l1, scale_lr, stages, groups, schedulers, warmup
    ("optim_l1", [*FIT, "--model.init_args.optim.l1=-1"], "model.init_args.optim.l1"),
    ("optim_scale_lr", [*FIT, "--model.init_args.optim.scale_lr=cubic"], "scale_lr"),
    ("stage_optimizer", [*FIT, stages("{optimizer: torch.optim.NoSuchOpt}")], "stages[0].optimizer"),
    ("stage_not_optimizer", [*FIT, stages("{optimizer: torch.nn.Linear}")], "stages[0].optimizer"),
    ("stage_key", [*FIT, stages(f"{{optimiser: {STAGE}}}")], "optimiser"),
    ("stage_no_optimizer", [*FIT, stages("{warmup_steps: 5}")], "stages[0].optimizer"),
    ("stage_first_start", [*FIT, stages(f"{{optimizer: {STAGE}, start_epoch: 1}}")], "stages[0].start_epoch"),
    (
        "stage_order",
        [*FIT, "--trainer.max_epochs=9", stages(f"{{optimizer: {STAGE}}}", f"{{optimizer: {STAGE}, start_epoch: 0}}")],
        "stages[1].start_epoch",
    ),
    (
        "stage_after_run",
        [*FIT, "--trainer.max_epochs=2", stages(f"{{optimizer: {STAGE}}}", f"{{optimizer: {STAGE}, start_epoch: 5}}")],
        "model.init_args.optim.stages[1].start_epoch",
    ),
    ("optimizer_kwarg", [*FIT, stages("{optimizer: {class_path: torch.optim.SGD, init_args: {lrr: 0.1}}}")], "lrr"),
    (
        "scheduler_no_interval",
        [
            *FIT,
            stages(
                f"{{optimizer: {STAGE}, lr_scheduler: {{class_path: torch.optim.lr_scheduler.StepLR, "
                "init_args: {step_size: 2}}}"
            ),
        ],
        "interval",
    ),
    (
        "scheduler_class",
        [*FIT, stages(f"{{optimizer: {STAGE}, interval: step, lr_scheduler: torch.optim.lr_scheduler.NoSuchLR}}")],
        "lr_scheduler",
    ),
    (
        "plateau_without_monitor",
        [
            *FIT,
            stages(
                f"{{optimizer: {STAGE}, interval: epoch, lr_scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau}}"
            ),
        ],
        "monitor",
    ),
    ("warmup_negative", [*FIT, stages(f"{{optimizer: {STAGE}, warmup_steps: -3}}")], "warmup_steps"),
    ("warmup_factor", [*FIT, stages(f"{{optimizer: {STAGE}, warmup_steps: 3, warmup_start_factor: 0}}")], "warmup"),
    (
        "warmup_onecycle",
        [
            *FIT,
            stages(
                f"{{optimizer: {STAGE}, interval: step, warmup_steps: 3, lr_scheduler: {{class_path: "
                "torch.optim.lr_scheduler.OneCycleLR, init_args: {max_lr: 0.01, total_steps: 0}}}"
            ),
        ],
        "warmup_steps",
    ),
    (
        "chain_milestones",
        [
            *FIT,
            stages(
                f"{{optimizer: {STAGE}, interval: step, milestones: [], lr_scheduler: ["
                "torch.optim.lr_scheduler.ConstantLR, torch.optim.lr_scheduler.ExponentialLR]}"
            ),
        ],
        "milestones",
    ),
    ("group_pattern", [*FIT, "--model.init_args.optim.groups=[{lr_scale: 0.1}]"], "groups[0]"),
    ("group_lr_scale", [*FIT, "--model.init_args.optim.groups=[{pattern: 'net.*', lr_scale: fast}]"], "lr_scale"),
    (
        "groups_with_lbfgs",
        [*FIT, "--config", str(CONFIGS / "optim/lbfgs.yaml"), "--model.init_args.optim.groups=[{pattern: 'net.*'}]"],
        "optim.groups",
    ),
    (
        "lbfgs_mixed_precision",
        [*FIT, "--config", str(CONFIGS / "optim/lbfgs.yaml"), "--trainer.precision=bf16-mixed"],
        "model.init_args.optim.stages[0].optimizer",
    ),
    # data.init_args.*
    ("data_class", [*FIT, "--data.class_path=proj.data.NoSuchData"], "NoSuchData"),
    ("val_fraction", [*FIT, "--data.init_args.val_fraction=1.5"], "data.val_fraction"),
    ("batch_size_type", [*FIT, "--data.init_args.batch_size=big"], "data.init_args.batch_size"),
    ("sampler", [*FIT, "--data.init_args.sampler=sideways"], "data.init_args.sampler"),
    ("smote_on_images", [*FIT, "--data.init_args.sampler=smote"], "data.sampler=smote"),  # digits: (1, 8, 8)
    ("data_unknown_key", [*FIT, "--data.init_args.batch_sizes=8"], "batch_sizes"),
    # trainer.*
    ("max_epochs", [*FIT, "--trainer.max_epochs=many"], "trainer.max_epochs"),
    ("precision", [*FIT, "--trainer.precision=17-mixed"], "precision"),
    ("clip_algorithm", [*FIT, "--trainer.gradient_clip_algorithm=sideways"], "gradient_clip_algorithm"),
    ("accumulate", [*FIT, "--trainer.accumulate_grad_batches=0"], "accumulate_grad_batches"),
    ("limit_negative", [*FIT, "--trainer.limit_train_batches=-1"], "limit_train_batches"),
    ("devices_zero", [*FIT, "--trainer.devices=0"], "devices"),
    ("multinode_without_launcher", [*FIT, "--config", str(CONFIGS / "trainer/multinode.yaml")], "trainer.num_nodes"),
    ("trainer_unknown_key", [*FIT, "--trainer.max_epochz=3"], "max_epochz"),
    # callbacks, seed, test-after-fit options
    (
        "callback_init_args",
        [
            *FIT,
            "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.EarlyStopping, "
            "init_args: {monitor: val/loss, mode: sideways}}]",
        ],
        "trainer.callbacks",
    ),
    ("callback_class", [*FIT, "--trainer.callbacks=[{class_path: proj.callbacks.NoSuchCallback}]"], "NoSuchCallback"),
    ("seed", [*FIT, "--seed_everything=abc"], "seed_everything"),
    ("test_ckpt", [*FIT, "--test_ckpt=middle"], "test_ckpt"),
    ("test_after_fit", [*FIT, "--test_after_fit=perhaps"], "test_after_fit"),
    # checkpoints and --resume
    ("ckpt_missing", [*FIT, "--ckpt_path={tmp}/missing.ckpt"], "missing.ckpt"),
    ("ckpt_text_file", [*FIT, "--ckpt_path={tmp}/notes.ckpt"], "notes.ckpt"),
    ("ckpt_plain_dict", [*FIT, "--ckpt_path={tmp}/plain.ckpt"], "plain.ckpt"),
    ("ckpt_other_class", [*FIT, "--ckpt_path={run}/other.ckpt"], "model.class_path", other_class_checkpoint),
    ("resume_truncated_last", ["fit", "--resume={run}"], "best-00.ckpt", truncated_last),
    ("resume_not_a_run", ["fit", "--resume={tmp}"], "--resume"),
    (
        "resume_other_width",
        ["fit", "--resume={run}", "--trainer.max_epochs=2", "--model.init_args.net.init_args.widths=[8, 64]"],
        "model.init_args.net.init_args.widths",
    ),
    (
        "test_other_width",
        [
            "test",
            "--config={run}/config.yaml",
            "--ckpt_path={run}/checkpoints/best-00.ckpt",
            "--model.init_args.net.init_args.widths=[8, 64]",
        ],
        "model.init_args.net.init_args.widths",
    ),
    ("predict_ckpt_missing", ["predict", "--config={run}/config.yaml", "--ckpt_path={tmp}/gone.ckpt"], "gone.ckpt"),
    # Lightning's "last" / "best" name this new trainer's checkpoints: once untrained weights into a new version
    ("predict_last_without_a_run", ["predict", f"--config={DEFAULT}", "--ckpt_path=last"], "predict needs a"),
    (
        "test_last_of_a_run_without_one",
        ["test", "--config={run}/config.yaml", "--ckpt_path=last"],
        "last.ckpt does not",
        no_last,
    ),
    # --init_from (a new run from another run's weights)
    ("init_from_missing", [*FIT, "--init_from={tmp}/missing.ckpt"], "missing.ckpt does not exist"),
    ("init_from_text_file", [*FIT, "--init_from={tmp}/notes.ckpt"], "notes.ckpt is not a readable checkpoint"),
    (
        "init_from_other_net",
        [*FIT, "--model.init_args.net.class_path=proj.nets.MLP", "--init_from={run}/checkpoints/best-00.ckpt"],
        "model.init_args.net",
    ),
    (
        "init_from_other_width",  # only the head's bias (10 classes either way) would fit: no layer weight does
        [*FIT, "--model.init_args.net.init_args.widths=[8, 16]", "--init_from={run}/checkpoints/best-00.ckpt"],
        "not one layer weight",
    ),
    (
        "init_from_with_ckpt_path",
        [*FIT, "--ckpt_path={run}/checkpoints/best-00.ckpt", "--init_from={run}/checkpoints/best-00.ckpt"],
        "--ckpt_path",
    ),
    ("init_from_with_resume", ["fit", "--resume={run}", "--init_from={run}/checkpoints/best-00.ckpt"], "--resume"),
]


# The GPU presets on a machine without one: refused before anything is built (on a GPU machine they would train).
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
GPU_PRESETS = [
    (f"{name}_yaml_without_gpu", [*FIT, "--config", str(CONFIGS / f"trainer/{name}.yaml")], "trainer.accelerator")
    for name in ("gpu", "fsdp")
]
PARAMS = [pytest.param(c, id=c[0]) for c in CASES] + [pytest.param(c, id=c[0], marks=NO_GPU) for c in GPU_PRESETS]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input_is_one_clear_line_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)
