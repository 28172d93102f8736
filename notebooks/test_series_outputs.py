"""After ``pytest --nbmake notebooks/`` ran the series (collected before this file): one cache
served every notebook, and the figures the README and the notebooks promise were written."""

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted(p.name for p in Path(__file__).parent.glob("[0-9][0-9]_*.ipynb"))


def test_series_shared_its_cache_and_wrote_its_figures(pytestconfig):
    missing = set(NOTEBOOKS) - pytestconfig.mmmixlab_ran
    if missing:
        pytest.skip(f"needs the whole series run with --nbmake in this session (missing "
                    f"{sorted(missing)})")
    cache = Path(os.environ["MMMIXLAB_CACHE"])
    if pytestconfig.mmmixlab_fresh_cache:  # a fresh cache: every run trained exactly once
        runs = sorted(p.name.split("-s")[0] for p in (cache / "runs").iterdir())
        assert runs == ["baseline", "mm-mixing"], runs
        assert len(list((cache / "clip").glob("*.pt"))) == 1
    written = {p.name for p in Path(os.environ["MMMIXLAB_FIGURES"]).glob("*.png")}
    expected = {"mixing.png", "triplets_train.png", "umap_mmmixing.png", "umap_baseline.png",
                "confusion_mmmixing.png", "hard_samples.png", "retrieval_pc2pc.png",
                "retrieval_img2pc.png", "retrieval_text2pc.png", "ablation_table3.png",
                "ablation_table4.png", "ablation_table5.png"}
    assert expected <= written, expected - written
