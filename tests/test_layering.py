"""GIVEN the package layering of the design WHEN each layer is imported in a fresh interpreter
THEN it loads none of the heavy libraries it must not depend on."""

import subprocess
import sys

import pytest

CASES = [
    ("octa_tui.protocol", ("torch", "textual")),
    ("octa_tui.diagnosis", ("torch", "textual", "zmq")),
    # Every trainer module, the framework integrations (Lightning, transformers, ...) included:
    # half a minute of imports, so it runs in `make test`, not `make test-fast`.
    pytest.param("octa_tui.trainer", ("textual",), marks=pytest.mark.slow),
    ("octa_tui.tui", ("torch",)),
]


def _modules_loaded_by(module: str) -> set[str]:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({module!r})\n"
        "for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize(("module", "forbidden"), CASES)
def test_layer_does_not_load_forbidden_libraries(module: str, forbidden: tuple[str, ...]) -> None:
    loaded = _modules_loaded_by(module)
    assert not loaded & set(forbidden), f"{module} (and its submodules) loaded {sorted(loaded & set(forbidden))}"
