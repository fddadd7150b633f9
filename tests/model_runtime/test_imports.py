"""Package boundaries: the CLI module loads without torch; no imports of the other packages."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import model_runtime


def test_cli_module_imports_without_torch():
    code = "import sys, model_runtime.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(model_runtime.__file__).parents[1])


def test_model_runtime_imports_no_sibling_package():
    root = pathlib.Path(model_runtime.__file__).parent
    for file in root.rglob("*.py"):
        for line in file.read_text().splitlines():
            assert not line.startswith(("from swarm", "import swarm", "from tools", "from storage", "from tui")), file
