"""Deployment formats side by side: PyTorch fp32, onnxruntime fp32 and onnxruntime int8 (dynamic
quantisation), on the same checkpoint, in one run: file size, CPU latency at batch 1 and 64 (median of
30 runs), test accuracy.

    python benchmarks/export.py              # trains the default config first (about 15 s)
    python benchmarks/export.py --config logs/default/version_0/config.yaml --ckpt_path .../best-22.ckpt
"""

import argparse
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from proj.cli import main as proj

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--ckpt_path")
    args = parser.parse_args()
    if not args.ckpt_path:
        os.chdir(tempfile.mkdtemp(prefix="export_bench_"))
        run = proj(["fit", "--config", str(ROOT / "configs" / "default.yaml"), "--trainer.enable_progress_bar=false"])
        args.ckpt_path = run.trainer.checkpoint_callback.best_model_path
        args.config = str(Path(args.ckpt_path).parent.parent / "config.yaml")
    proj(["export", "--config", args.config, f"--ckpt_path={args.ckpt_path}", "--format=onnx", "--quantize=int8"])


if __name__ == "__main__":
    main()
