"""The layers on CUDA tensors: GPU_CUDA through DLPack, on PyTorch's current stream.

Marked ``gpu`` and skipped unless PyTorch sees a CUDA device and CuPy imports.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[torch]'")
import torch  # noqa: E402


def _usable() -> bool:
    try:
        import cupy

        return torch.cuda.is_available() and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, a CPU-only PyTorch
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _usable(), reason="needs a CUDA device, CUDA PyTorch and CuPy")]

from heterosymnn.torch import HeteroActivation, HeteroLoss, ops  # noqa: E402
from torch_support import LOSSES, WITH_CONSTANTS, away_from_kinks, tensor  # noqa: E402

TOLERANCE = {torch.float32: dict(rtol=3e-5, atol=3e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_matches_cpu_forward_and_gradients(dtype):
    cpu = HeteroActivation(WITH_CONSTANTS, method="CPU_PYTHON", dtype=dtype)
    gpu = HeteroActivation(WITH_CONSTANTS, dtype=dtype).cuda()
    assert gpu.calculation_method == "GPU_CUDA"
    values = away_from_kinks((3, 5, len(WITH_CONSTANTS)), seed=11)
    results = []
    for layer, device in ((cpu, "cpu"), (gpu, "cuda")):
        x = tensor(values, dtype=dtype).to(device).requires_grad_()
        y = layer(x)
        y.backward(torch.ones_like(y) * 0.5)
        results.append((y.detach().cpu(), x.grad.cpu(), layer.constants.grad.cpu()))
    for got, expected in zip(results[1], results[0]):
        torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


def test_cuda_runs_on_the_current_stream():
    layer = HeteroActivation(["tanh", ("a*sin(w*num)", {"a": 2.0, "w": 3.0})]).cuda()
    stream = torch.cuda.Stream()
    big = torch.randn(1 << 20, 2, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        x = big * 0.5  # queued on ``stream``; the kernels must run after it, on it
        y = layer(x)
        layer.set_constants(1, w=1.0)  # new constants, uploaded on the same stream
        y2 = layer(x)
    stream.synchronize()
    expected = torch.stack([torch.tanh(big[:, 0] * 0.5), 2.0 * torch.sin(3.0 * big[:, 1] * 0.5)], dim=1)
    torch.testing.assert_close(y, expected, rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(y2[:, 1], 2.0 * torch.sin(big[:, 1] * 0.5), rtol=3e-5, atol=3e-5)


def test_cuda_errors():
    cpu_only = HeteroActivation(["relu"] * 8, method="CPU_JIT")
    with pytest.raises(ValueError, match="x is on cuda:0, but the layer is on cpu"):
        cpu_only(torch.zeros(2, 8, device="cuda"))
    cpu_only.cuda()
    with pytest.raises(ValueError, match="method='CPU_JIT', which runs on the CPU"):
        cpu_only(torch.zeros(2, 8, device="cuda"))


def test_cuda_opcheck_and_loss():
    layer = HeteroActivation(WITH_CONSTANTS, dtype=torch.float64).cuda()
    x = tensor(away_from_kinks((4, len(WITH_CONSTANTS)), seed=12)).cuda().requires_grad_()
    torch.library.opcheck(ops.activation, (x, layer.constants.detach().clone().requires_grad_(), layer._layer_id))
    loss = HeteroLoss(LOSSES, dtype=torch.float64).cuda()
    y_pred = tensor(away_from_kinks((6, len(LOSSES)), seed=13)).cuda().requires_grad_()
    y_true = tensor(away_from_kinks((6, len(LOSSES)), seed=14)).cuda()
    cpu_loss = HeteroLoss(LOSSES, method="CPU_PYTHON", dtype=torch.float64)
    for reduction in ("mean", "none"):
        results = []
        for module, device in ((loss, "cuda"), (cpu_loss, "cpu")):
            module.reduction = reduction
            module.zero_grad()
            p = y_pred.detach().to(device).requires_grad_()
            (module(p, y_true.to(device)) * torch.arange(1.0, 7.0, device=device, dtype=torch.float64)[:, None]
             if reduction == "none" else module(p, y_true.to(device))).sum().backward()
            results.append((p.grad.cpu(), module.constants.grad.cpu()))
        for got, expected in zip(*results):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not _usable() or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_another_gpu_moves_the_same_compiler():
    layer = HeteroActivation(WITH_CONSTANTS).to("cuda:0")
    x = tensor(away_from_kinks((3, len(WITH_CONSTANTS)), seed=15), dtype=torch.float32)
    y0 = layer(x.to("cuda:0")).cpu()
    comp = layer._kernels.entry(torch.float32, torch.device("cuda", 0)).comp
    layer.to("cuda:1")
    y1 = layer(x.to("cuda:1")).cpu()
    assert layer._kernels.entry(torch.float32, torch.device("cuda", 1)).comp is comp and comp.device_id == 1
    np.testing.assert_array_equal(y1.numpy(), y0.numpy())
