"""The built-in architectures, declared as data: ``suites/archs/builtin.yaml`` registered with :func:`register_arch`.

Each names its builder by import path, imported when a model is built, so listing, showing and checking suites (and
a count answered from the cache) read these declarations without importing torch. A plugin's arch registers the
same way, or with ``@cabench.register_arch`` on its builder.
"""

from __future__ import annotations

from cabench.locate import PACKAGED_SUITES
from cabench.models.registry import register_arch
from cabench.yamlio import read_yaml_mapping

DECLARATIONS = PACKAGED_SUITES / "archs" / "builtin.yaml"

for _name, _entry in read_yaml_mapping(DECLARATIONS, "architecture declarations", ValueError).items():
    register_arch(_name, **{k: tuple(v) if isinstance(v, list) else v for k, v in _entry.items()})
