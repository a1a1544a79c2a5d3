"""notebooks/dlas_analysis.ipynb runs top to bottom on a real finished study (nbclient, a real
IPython kernel) with its parameters injected the way papermill does."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "dlas_analysis.ipynb"


def _with_parameters(notebook: nbformat.NotebookNode, **parameters) -> nbformat.NotebookNode:
    """A cell assigning ``parameters`` right after the cell tagged ``parameters``."""
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return notebook


def _outputs(notebook: nbformat.NotebookNode, kind: str) -> list:
    return [output["data"][kind] for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if kind in output.get("data", {})]


def test_analysis_notebook_runs_on_a_finished_study(finished_study, tmp_path):
    project, name = finished_study
    notebook = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), study_name=name, storage=None,
                                project_dir=str(project.root))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any cell error
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert f"study {name}: 8 trials, 8 completed" in printed
    # two Pareto figures and the interaction figure, each drawn
    assert len(_outputs(notebook, "image/png")) == 3
    observations = "".join(_outputs(notebook, "text/markdown"))
    assert "Cross-stack observations" in observations and "**" in observations
    nbformat.write(notebook, tmp_path / "dlas_analysis.executed.ipynb")
