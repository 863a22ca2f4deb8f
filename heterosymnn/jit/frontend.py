"""The layer as the compiler sees it: a plan now, SymPy structures only if needed.

Parsing and differentiating needs SymPy (a quarter of a second to import,
more to derive). A worker process whose kernels are all cached needs neither:
the plan (which structure each node uses, slot names, named-formula defaults)
is kept in the cache under a key of the config texts and constant *names*,
and the node's constant values are filled in from its dict.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import CompilationWarning
from ..symbolic.configs import FormulaSyntaxProblem, normalize_config
from ..symbolic.named_table import named_table_fingerprint
from ..symbolic.plan import LayerPlan

PLAN_FILE = "plan.json"


class LayerSource:
    """A layer's :class:`LayerPlan`, and its structures on demand."""

    def __init__(self, configs: Sequence[Any], mode: str, cache: Optional[Any] = None):
        self.configs = configs
        self.mode = mode
        self._cache = cache
        self._analyzed = None
        self.plan = self._plan_from_cache() or self._analyze().plan

    @property
    def structures(self) -> Tuple[Any, ...]:
        """The SymPy structures, aligned with ``plan.structure_keys`` (imports SymPy)."""
        return self._analyze().structures

    def structures_for(self, keys: Sequence[str]) -> List[Any]:
        by_key = {s.key: s for s in self.structures}
        return [by_key[k] for k in keys]

    def _analyze(self):
        if self._analyzed is None:
            from ..symbolic.layer import analyze

            self._analyzed = analyze(self.configs, self.mode)
            self._store_plan(self._analyzed.plan)
        return self._analyzed

    # -- the plan record ---------------------------------------------------------------
    def plan_record_key(self) -> Optional[str]:
        """The cache key of this layer's plan record; None for configs that have none."""
        normalized = self._normalized() if self._cache is not None else None
        return self._record_key(normalized) if normalized is not None else None

    def _normalized(self) -> Optional[List[Tuple[str, Dict[str, float]]]]:
        if isinstance(self.configs, (str, bytes)) or not self.configs:
            return None
        try:
            return [normalize_config(c) for c in self.configs]
        except (FormulaSyntaxProblem, TypeError):
            return None  # the full analysis reports it properly

    def _record_key(self, normalized) -> str:
        from ..cache import cache_key

        shape = [self.mode, [[text, sorted(constants)] for text, constants in normalized]]
        # The same text means another plan once "sigmoid" is defined differently (the table
        # in this process) or the parser changes (cache_key hashes the generator's code).
        language = {"named_formulas": named_table_fingerprint()}
        return cache_key("layer-plan", source=json.dumps(shape), toolchain_identity="none", extra=language)

    def _plan_from_cache(self) -> Optional[LayerPlan]:
        normalized = self._normalized() if self._cache is not None else None
        if normalized is None:
            return None
        entry = self._cache.lookup(self._record_key(normalized))
        if entry is None:
            return None
        try:
            data = json.loads(Path(entry.file(PLAN_FILE)).read_text(encoding="utf-8"))
            values = []
            for (_, constants), names, defaults in zip(normalized, data["node_slot_names"], data["node_defaults"]):
                values.append(tuple(constants[n] if n in constants else d for n, d in zip(names, defaults)))
            data["node_values"] = values
            del data["node_defaults"]
            plan = LayerPlan.from_json(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._cache.invalidate(entry, f"unreadable layer plan: {exc}")
            return None
        for index, ((_, constants), names) in enumerate(zip(normalized, plan.node_slot_names)):
            unused = sorted(set(constants) - set(names))
            if unused:  # the same warning a cold analysis gives
                warnings.warn(f"node {index}: constant(s) {', '.join(unused)} given but not used by "
                              f"{self.configs[index]!r:.80}", CompilationWarning, stacklevel=4)
        return plan

    def _store_plan(self, plan: LayerPlan) -> None:
        normalized = self._normalized() if self._cache is not None else None
        if normalized is None:
            return
        data = plan.to_json()
        data["node_defaults"] = [
            [None if name in constants else value for name, value in zip(names, values)]
            for (_, constants), names, values in zip(normalized, plan.node_slot_names, plan.node_values)
        ]
        del data["node_values"]

        def write(folder: Path) -> Dict[str, Any]:
            (folder / PLAN_FILE).write_text(json.dumps(data), encoding="utf-8")
            return {"kind": "layer-plan"}

        try:
            self._cache.build(self._record_key(normalized), write, record=True)
        except OSError:  # the plan is an optimisation; never fail a layer over it
            pass
