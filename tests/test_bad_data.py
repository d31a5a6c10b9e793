"""Bad data and data settings: each is refused before training, on one line that names the key or the path.

One table: every case builds its files in the test's folder, runs `fit` in-process and expects exit status 2,
one error line naming the key / path / row, no traceback and no checkpoint. Then a checkpoint whose classes
differ from the data's (a renamed class folder, a 3-class checkpoint on 2-class data): validate, predict and
export stop before running, naming both lists, where predict used to swap every label.
"""

import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from proj.cli.registry import commands

from conftest import DEFAULT, QUICK, cli, usage_error

pytestmark = pytest.mark.xdist_group("bad_data")  # its module fixture is built once, on one worker


IMAGES = ["--data=proj.data.ImageFolderDataModule", "--data.image_size=[8, 8]"]
SPLIT = ["--data.val_fraction=0.25", "--data.test_fraction=0.25"]


def images(root, classes=("a", "b"), per_class=4):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (80 * c, 40 * i, 0)).save(root / name / f"{i}.png")
    return root


def cifar(root, rows=4, width=3072, labels=None, damage=None):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {b"data": np.zeros((rows, width), np.uint8), b"labels": labels or [i % 10 for i in range(rows)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    if damage:
        damage(folder / "data_batch_2")
    return ["--data=proj.data.CIFAR10DataModule", f"--data.root={root}", "--model.init_args.net.init_args.widths=[4]"]


def csv(root, text):
    (root / "t.csv").write_text(text)
    return ["--data=proj.data.CSVDataModule", f"--data.path={root / 't.csv'}", "--data.target=label"]


def new_rows(root, text):
    (root / "new.csv").write_text(text)
    return f"--data.predict_path={root / 'new.csv'}"


MLP = ["--model.init_args.net=proj.nets.MLP"]
TABLE = "f1,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(12))


def truncate(path, keep=100):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])


def jpegs(root, per_class=100):
    """Two classes of small JPEGs, and the last one of class b cut in half, as a failed copy leaves it."""
    noise = np.random.default_rng(0).integers(0, 256, (per_class, 32, 32, 3), dtype=np.uint8)
    for c, name in enumerate("ab"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(noise[i] // (c + 1)).save(root / name / f"{i:03d}.jpg", quality=90)
    truncate(root / "b" / f"{per_class - 1:03d}.jpg", keep=0.5)
    return [*IMAGES, f"--data.root={root}"]


def text_named_jpg(root):
    images(root)
    (root / "a" / "notes.jpg").write_text("not an image, named like one")
    return [*IMAGES, f"--data.root={root}", *SPLIT]


def empty_class(root):
    images(root)
    (root / "c").mkdir()
    return [*IMAGES, f"--data.root={root}"]


def corrupt_image(root):
    images(root)
    (root / "b" / "9.png").write_bytes(b"\x89PNG not an image")
    return [*IMAGES, f"--data.root={root}", *SPLIT]


# (id, the arguments after the default config given the test's folder, what the error line must name)
CASES = [
    ("image_size zero", lambda t: [*IMAGES, f"--data.root={images(t)}", "--data.image_size=[0, 0]"],
     lambda t: "data.image_size=[0, 0]"),
    ("image folder one class", lambda t: [*IMAGES, f"--data.root={images(t, ('a',))}"], lambda t: "['a']"),
    ("image folder empty class", empty_class, lambda t: "without images: ['c']"),
    ("test split smaller than the classes", lambda t: [*IMAGES, f"--data.root={images(t, tuple('abcdef'), 3)}"],
     lambda t: "data.test_fraction: a stratified split of 18 samples of 6 classes would hold out 4"),
    ("image root missing", lambda t: [*IMAGES, f"--data.root={t / 'nowhere'}"], lambda t: str(t / "nowhere")),
    ("corrupt image", corrupt_image, lambda t: str(t / "b" / "9.png")),
    ("truncated jpeg among 200", jpegs, lambda t: f"{t / 'b' / '099.jpg'} is a truncated JPEG"),
    ("text file named .jpg", text_named_jpg, lambda t: f"{t / 'a' / 'notes.jpg'} is not an image"),
    ("image mean without std", lambda t: [*IMAGES, f"--data.root={images(t)}", "--data.mean=[0.5, 0.5, 0.5]"],
     lambda t: "data.mean=[0.5, 0.5, 0.5] and data.std=None"),
    ("sample_augment in memory", lambda t: [*IMAGES, f"--data.root={images(t)}", "--data.in_memory=true",
     '--data.sample_augment=[{"class_path": "kornia.augmentation.RandomHorizontalFlip"}]'],
     lambda t: "data.sample_augment"),
    ("predict_root missing", lambda t: [*IMAGES, f"--data.root={images(t)}", *SPLIT, f"--data.predict_root={t}/x"],
     lambda t: f"data.predict_root='{t}/x'"),
    ("cifar rows of the wrong length", lambda t: cifar(t, width=100),
     lambda t: str(t / "cifar-10-batches-py" / "data_batch_1")),
    ("cifar label out of range", lambda t: cifar(t, labels=[0, 1, 10, 3]), lambda t: "row 2 has label 10"),
    ("cifar truncated batch", lambda t: cifar(t, damage=truncate),
     lambda t: f"{t / 'cifar-10-batches-py' / 'data_batch_2'} is not a readable CIFAR batch"),
    ("cifar missing", lambda t: ["--data=proj.data.CIFAR10DataModule", f"--data.root={t}"],
     lambda t: str(t / "cifar-10-batches-py")),
    ("csv target column missing", lambda t: [*csv(t, TABLE), "--data.target=kind", *MLP],
     lambda t: "data.target='kind'"),
    ("csv non-numeric feature", lambda t: [*csv(t, TABLE.replace("\n3,", "\nthree,")), *MLP],
     lambda t: "t.csv:5: column 'f1' holds 'three'"),
    ("csv class of one row", lambda t: [*csv(t, TABLE + "99,c\n"), *MLP], lambda t: f"class 'c' (1 row) in {t}/t.csv"),
    ("csv one class", lambda t: [*csv(t, TABLE.replace(",b", ",a")), *MLP], lambda t: "holds 1 class(es) ['a']"),
    ("csv path missing", lambda t: ["--data=proj.data.CSVDataModule", f"--data.path={t}/no.csv", "--data.target=y"],
     lambda t: f"data.path='{t}/no.csv'"),
    # data.classes, which a run's config.yaml now holds: a file or folder of other classes is refused, naming both
    ("csv label outside classes", lambda t: [*csv(t, TABLE), "--data.classes=[a]", *MLP],
     lambda t: "holds ['b'], not in data.classes ['a']"),
    ("csv classes for a regression", lambda t: [*csv(t, TABLE.replace(",a", ",1").replace(",b", ",2")), *MLP,
     "--data.classes=[a, b]", "--data.task=regression", "--model=proj.models.Regressor"],
     lambda t: "data.classes names the labels of a classification"),
    ("image folders other than classes", lambda t: [*IMAGES, f"--data.root={images(t)}", "--data.classes=[a, c]"],
     lambda t: "holds the class folders ['a', 'b'], but data.classes is ['a', 'c']"),
    ("predict without the training data or classes", lambda t: [*IMAGES, f"--data.root={t}/gone",
     f"--data.predict_root={images(t)}"], lambda t: f"data.root='{t}/gone' is not a directory of class sub-folders"),
    ("csv class without rows", lambda t: [*csv(t, TABLE), "--data.classes=[a, b, z]", *MLP],
     lambda t: "class 'z' (0 row)"),  # once a model with an output no row trains
    ("csv classes twice", lambda t: [*csv(t, TABLE), "--data.classes=[a, b, a]", *MLP],
     lambda t: "data.classes=['a', 'b', 'a'] names ['a'] more than once"),
    ("image classes twice", lambda t: [*IMAGES, f"--data.root={images(t)}", "--data.classes=[b, a, b]"],
     lambda t: "names ['b'] more than once"),
    ("csv predict_path missing", lambda t: [*csv(t, TABLE), *MLP, "--data.predict_path=nowhere.csv"],
     lambda t: "data.predict_path='nowhere.csv' does not exist"),
    ("csv predict_path lacks a feature", lambda t: [*csv(t, TABLE), *MLP, new_rows(t, "f2\n1\n")],
     lambda t: "new.csv lacks the feature column(s) ['f1']"),
    ("csv predict_path not a number", lambda t: [*csv(t, TABLE), *MLP, new_rows(t, "f1\nabc\n")],
     lambda t: "new.csv:2: column 'f1' holds 'abc', not a number"),
    ("batch_size zero", lambda t: ["--data.batch_size=0"], lambda t: "data.batch_size=0"),
    ("val_fraction above 1", lambda t: ["--data.val_fraction=1.5"], lambda t: "data.val_fraction=1.5"),
    ("fractions leave no data", lambda t: ["--data.val_fraction=0.5", "--data.test_fraction=0.5"],
     lambda t: "data.val_fraction + data.test_fraction"),
    ("cv_fold beyond cv_folds", lambda t: ["--data.cv_folds=3", "--data.cv_fold=3"], lambda t: "data.cv_fold=3"),
    ("class_weights of the wrong length", lambda t: ["--data.class_weights=[1.0, 2.0]"],
     lambda t: "data.class_weights has 2 values for 10 classes"),
    ("regression with a sampler", lambda t: ["--data=proj.data.DiabetesDataModule", "--data.sampler=oversample",
     "--model=proj.models.Regressor", *MLP], lambda t: "data.sampler='oversample'"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_is_refused_on_one_line_before_training(in_tmp, capsys, make, named):
    args = make(in_tmp)
    error = usage_error(capsys, "fit", "--config", DEFAULT, *QUICK, *args)
    assert named(in_tmp) in error, error
    assert not list(in_tmp.rglob("*.ckpt"))


# --- a checkpoint of other classes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """A run trained on image classes a, b, c (one quick epoch), and its last checkpoint."""
    import os

    work = tmp_path_factory.mktemp("three")
    images(work / "imgs", ("a", "b", "c"))
    old = os.getcwd()
    os.chdir(work)
    try:
        cli("fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=1", *IMAGES, "--data.root=imgs", *SPLIT,
            "--test_after_fit=false")  # fmt: skip
    finally:
        os.chdir(old)
    run = work / "logs" / "default" / "version_0"
    return work, run, run / "checkpoints" / "last.ckpt"


# export too, when the export extra is installed
@pytest.mark.parametrize("subcommand", ["predict", "validate", "test", *(["export"] if "export" in commands() else [])])
@pytest.mark.parametrize(
    ("change", "data_classes"),
    [
        (lambda root: (root / "c").rename(root / "0_c"), "['0_c', 'a', 'b']"),  # renamed: the order moves
        (lambda root: shutil.rmtree(root / "c"), "['a', 'b']"),  # 2-class data: once a state_dict size mismatch
    ],
    ids=["renamed class folder", "fewer classes"],
)
def test_a_checkpoint_of_other_classes_is_refused_naming_both(
    three_classes, tmp_path, monkeypatch, capsys, subcommand, change, data_classes
):
    work, run, last = three_classes
    root = tmp_path / "imgs"
    shutil.copytree(work / "imgs", root)
    change(root)
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(run / "config.yaml"), f"--data.root={root}", f"--ckpt_path={last}"]
    error = usage_error(capsys, subcommand, *args, *(["--format=torchscript"] if subcommand == "export" else []))
    assert "['a', 'b', 'c']" in error and data_classes in error, error
    assert not any((run / name).exists() for name in ("predict/predictions.csv", "export"))


def test_predict_labels_by_the_checkpoint_classes(three_classes, tmp_path, monkeypatch):
    work, run, last = three_classes
    monkeypatch.chdir(tmp_path)
    cli("predict", "--config", str(run / "config.yaml"), f"--data.root={work / 'imgs'}", f"--ckpt_path={last}",
        "--trainer.enable_progress_bar=false")  # fmt: skip
    header = (run / "predict" / "predictions.csv").read_text().splitlines()[0]
    assert header == "id,predicted,p_a,p_b,p_c"


def test_a_model_built_without_class_names_takes_the_checkpoints():
    from proj.models import Classifier, TargetsMismatch
    from proj.nets import MLP

    model = Classifier(MLP, num_outputs=2, input_shape=(4,))
    assert model.class_names == ["0", "1"]
    saved = {"hyper_parameters": {"num_outputs": 2, "targets": {"task": "classification", "classes": ["cat", "dog"]}}}
    model.check_targets(saved, "x.ckpt")
    assert model.class_names == ["cat", "dog"] and model.prediction_columns() == ["predicted", "p_cat", "p_dog"]
    named = Classifier(MLP, num_outputs=2, input_shape=(4,), targets={"task": "classification", "classes": ["a", "b"]})
    with pytest.raises(TargetsMismatch, match=r"x.ckpt was trained on classes \['cat', 'dog'\], but the data has"):
        named.check_targets(saved, "x.ckpt")
