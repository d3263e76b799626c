"""Weight-only int8 for CPU inference, through torch's own dynamic quantisation.

    model = quantize_int8(omnidlm.load("models/text-tiny"))      # every nn.Linear -> int8 weights

Every `nn.Linear` (attention, MLP, head) keeps int8 weights with one scale per tensor and runs
through torch's quantised CPU kernels (activations are quantised on the fly, per batch). MoE
experts, stored as stacked parameters, stay in float. `omnidlm bench --quantize int8` measures
its tokens/s and exact-match change against the float model in the same run.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose `nn.Linear` layers hold int8 weights (CPU only)."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("--quantize int8 runs on the CPU (torch's dynamic int8 kernels); use --device cpu")
    with warnings.catch_warnings():  # torch marks the quantised-tensor API deprecated in favour of torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)
    quantized.quantized = "int8"
    return quantized
