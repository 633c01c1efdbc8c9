"""Tasks: each declared in its own module (:mod:`cabench.tasks.classification`, ``detection``, ``segmentation``;
:class:`cabench.tasks.base.TaskInfo`), torch-free, naming its implementation in :mod:`cabench.tasks._impl` (loss,
evaluation, recipe hooks) by import path. Import engine-side names from there, e.g.
``from cabench.tasks._impl.classification import train_classifier``.
"""
