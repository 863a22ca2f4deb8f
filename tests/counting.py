"""Count calls into the symbolic front end and the CUDA generator (for set_gpu_id tests)."""
from __future__ import annotations

from typing import Dict


def count_front_end_calls(monkeypatch) -> Dict[str, int]:
    """Patch ``analyze`` and ``render_cuda_module`` to count their calls; returns the live counters."""
    import heterosymnn.symbolic.layer as layer_module
    from heterosymnn.codegen import cuda_source

    calls = {"analyze": 0, "render": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(layer_module, "analyze", counting("analyze", layer_module.analyze))
    monkeypatch.setattr(cuda_source, "render_cuda_module", counting("render", cuda_source.render_cuda_module))
    return calls
