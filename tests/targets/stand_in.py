"""A stand-in for the module that defines a codebase's parse_model, for the argument check's rule tests
(the check reads parse_model's local names from its code object, and the module's globals)."""

from __future__ import annotations

import types
from typing import Any, Dict


def module_with_parse_model(name: str, namespace: Dict[str, Any], signature: str, locals_code: str
                            ) -> types.ModuleType:
    """Module ``name`` holding ``namespace`` and a ``parse_model(signature)`` that binds ``locals_code``'s
    names (indented lines) before the loop over the YAML rows, as the real one does."""
    module = types.ModuleType(name)
    exec(f"def parse_model({signature}):\n{locals_code}"
         "    for i, (f, n, m, args) in enumerate(d['backbone'] + d['head']):\n"
         "        for j, a in enumerate(args):\n"
         "            pass\n", namespace)
    module.__dict__.update(namespace)
    return module
