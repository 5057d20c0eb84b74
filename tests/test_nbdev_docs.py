"""nbdev's docs step (nbdev_readme, nbdev_prepare, quarto's filter) executes, in a fresh shell, only the cells
that define or import something. Those cells must run on their own: a cell that mixes imports with code using
an earlier example's variable breaks the docs (Quarto itself cannot be installed offline, so this runs
nbdev's own selection and shell without it)."""
import ast
import pytest
from nbdev.process import NBProcessor
from execnb.shell import CaptureShell
from nbdev.processors import _do_eval
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_docs_cells_run_on_their_own(nb, monkeypatch):
    monkeypatch.chdir(nb.parent)  # as nbdev runs it
    shell = CaptureShell()
    shell.run_cell("from nbdev.showdoc import show_doc")
    cells = []  # nbdev's processor parses each cell's directives, as its docs step does
    NBProcessor(nb, [lambda c: cells.append(c) if c.cell_type == "code" and _do_eval(c) else None],
                rm_directives=False).process()
    for cell in cells:
        if not cell.directives_.keys() & {"export", "exports", "exporti"}:  # picked for its imports: only imports
            assert all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.parse(cell.source).body), \
                f"{nb.name} cell {cell.idx_} mixes imports with code (nbdev runs it when building docs):\n{cell.source}"
        shell.cell(cell)
        assert not shell.exc, f"{nb.name} cell {cell.idx_}:\n{cell.source}\n{shell.exc!r}"


def test_notebook_numbers_follow_the_imports():
    "A module imports only from modules of lower-numbered notebooks (imports inside functions too): no cycles."
    import re
    number = {re.search(r"#\| default_exp (\w+)", nb.read_text()).group(1): nb.name
              for nb in (ROOT / "nbs").glob("[0-9]*.ipynb")}
    for module, nb in number.items():
        tree = ast.parse((ROOT / "mnist_lab" / f"{module}.py").read_text())
        used = {n.module.split(".")[-1] if n.level else n.module.split(".")[1] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module and (n.level or n.module.startswith("mnist_lab."))}
        for other in used:
            assert number[other] < nb, f"{nb} ({module}) imports {other}, whose notebook {number[other]} comes later"
