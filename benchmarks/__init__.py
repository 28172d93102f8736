"""Benchmarks for mmmixlab (issue #6). Not unit tests: they measure, they do not assert speed.

Each module runs alone (``python -m benchmarks.fps``) or through ``python -m benchmarks.run_all``
(``make bench``), which writes ``benchmarks/results-<device>.json``:

* :mod:`benchmarks.fps`: batched farthest point sampling vs open3d's legacy FPS (identical
  indices checked on every timed configuration); ``--refs`` instead: vs torch-quickfps and
  fpsample (optional extra ``bench``) over the issue-23 grid;
* :mod:`benchmarks.mixing_overhead`: one stage-2 step with input + feature mixing vs the same
  step without mixing;
* :mod:`benchmarks.feature_caching`: images/s and texts/s of the frozen CLIP encoders;
* :mod:`benchmarks.training_throughput`: samples/s and peak memory of stage 1 and stage 2.

Timings are taken side by side: the compared variants alternate within one process (A B A B,
the order rotated every round), so load from other jobs hits all of them alike; medians and
ratios are reported with the machine they ran on (:func:`benchmarks.common.machine_info`).
"""
