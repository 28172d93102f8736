"""What the notebooks call, one concept per module; this package's namespace is the notebooks'
one import (``from mmmixlab import workbench``):

* :mod:`~mmmixlab.workbench.runs`: the series' config (:func:`notebook_config`, smoke mode), the
  shared cache, runs trained once (:func:`get_run`, :func:`get_runs`) and their features;
* :mod:`~mmmixlab.workbench.steps`: one training step in the open (:func:`one_step`, the
  trainer's own phase objects);
* :mod:`~mmmixlab.workbench.samples`: predictions, confusions, hard samples, retrieval rows;
* :mod:`~mmmixlab.workbench.tables`: the DataFrames the notebooks display;
* :mod:`~mmmixlab.workbench.ablations`: ``mmmixlab ablate`` results for notebook 08;
* :mod:`~mmmixlab.workbench.benchmarks`: the paper's benchmarks and released models
  (``BENCHMARKS``, ``RELEASED``).

The paper's own numbers, shown beside ours, live in :mod:`mmmixlab.paper`. ``make strip``
(:mod:`mmmixlab.nbstrip`) removes outputs and saved widget state before a commit.
"""

from ..paper import ABLATION_TABLES, PAPER, paper_table
from .ablations import ablation, ablation_summary, ablation_tables, protocol_text, sweep_table
from .benchmarks import (
    benchmark_confusion,
    benchmark_evals,
    benchmark_hard_samples,
    benchmark_retrieval_rows,
    mix_feature_agreement,
    released_runs,
)
from .runs import (
    SMOKE_NOTE,
    SMOKE_OVERRIDES,
    Run,
    config_key,
    evaluate,
    get_run,
    get_runs,
    get_world,
    notebook_config,
    run_dir,
    run_point_features,
)
from .samples import (
    confusable_pair,
    confusion,
    hard_samples,
    modality_features,
    pick_examples,
    predictions,
    retrieval_rows,
)
from .steps import one_step
from .tables import (
    SPLIT_NAMES,
    benchmark_table,
    confused_pairs_table,
    feature_table,
    released_table,
    results_table,
    world_table,
)

__all__ = [
    "ABLATION_TABLES", "PAPER", "SMOKE_NOTE", "SMOKE_OVERRIDES", "SPLIT_NAMES", "Run", "ablation",
    "ablation_summary", "ablation_tables", "benchmark_confusion", "benchmark_evals",
    "benchmark_hard_samples", "benchmark_retrieval_rows", "benchmark_table", "config_key",
    "confusable_pair", "confused_pairs_table", "confusion", "evaluate", "feature_table",
    "get_run", "get_runs", "get_world", "hard_samples", "mix_feature_agreement",
    "modality_features", "notebook_config", "one_step", "paper_table", "pick_examples",
    "predictions", "protocol_text", "released_runs", "released_table", "results_table",
    "retrieval_rows", "run_dir", "run_point_features", "sweep_table", "world_table",
]
