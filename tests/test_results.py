"""One result shape: every analysis' result draws, shows and saves itself through
deconvviz.results.Result, in the file types written once in deconvviz._io (tests of each
result type: test_results_api)."""
import pytest
import torch
from conftest import zoo_model

import deconvviz as dv
import deconvviz.analyses  # noqa: F401  (every result class)
import deconvviz.analyses.crp_report  # noqa: F401  (ConceptReport)
import deconvviz.training  # noqa: F401  (TrainResult)
from deconvviz._io import DATA_FORMATS, FIGURE_FORMATS, UNDRAWN
from deconvviz.analyses.result import Result


def test_every_result_class_saves_the_formats_written_once():
    classes = {cls.kind: cls for cls in Result.__subclasses__()}
    assert set(classes) == set(DATA_FORMATS)  # no kind without its class, nor the reverse
    for kind, cls in classes.items():
        figure = () if kind in UNDRAWN else FIGURE_FORMATS  # a result with no figure
        assert cls.formats() == figure + DATA_FORMATS[kind]
        assert "save" not in vars(cls) and "_repr_png_" not in vars(cls), cls  # shared


def test_a_result_refuses_a_file_type_it_does_not_write_and_names_the_ones_it_does(tmp_path):
    result = dv.occlusion(zoo_model("alexnet"), torch.randn(1, 3, 96, 96), size=48,
                          stride=48)
    with pytest.raises(dv.OutputError, match=r"\.npz"):
        result.save(tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()
    assert result.save(tmp_path / "o.npz").endswith("o.npz")
    assert result._repr_png_()[:4] == b"\x89PNG"
