"""NetSummary: the model summary a newcomer reads at the start of fit: the net and its blocks, their parameters.

Lightning's summary lists every child of the LightningModule: here that is also the metrics and the loss (eight
rows of MeanMetric, MetricCollection and CrossEntropyLoss, none holding a parameter), and a FLOPs column that
Lightning fills only for a model with an example_input_array ("Total FLOPs: 0" otherwise). This keeps the rows
that hold parameters and leaves FLOPs out.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class NetSummary(ModelSummary):
    """Lightning's ModelSummary (max_depth 2: the net and its blocks), without the modules that hold no parameter."""

    def __init__(self, max_depth: int = 2) -> None:
        super().__init__(max_depth=max_depth)

    def summarize(  # Lightning's hook, a staticmethod there; here it needs nothing of the instance either
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        rank_zero_info(summary_table(dict(summary_data), total_parameters, trainable_parameters, model_size))


def summary_table(columns: dict[str, list[str]], total: int, trainable: int, size_mb: float) -> str:
    rows = [
        (n, t, p)
        for n, t, p in zip(columns["Name"], columns["Type"], columns["Params"], strict=True)
        if p.strip() != "0"
    ]
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(("module", "type"))]
    lines = [f"{'module':<{widths[0]}}  {'type':<{widths[1]}}  params"]
    lines += [f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {params.strip():>6}" for name, kind, params in rows]
    frozen = f", {get_human_readable_count(total - trainable)} frozen" if total != trainable else ""
    size = get_formatted_model_size(size_mb)
    lines.append(f"{get_human_readable_count(total)} parameters{frozen}, {size} MB")
    return "\n".join(lines)
