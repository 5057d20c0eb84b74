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
