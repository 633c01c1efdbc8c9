"""The engine side of the built-in tasks (torch): loss and evaluation, imported when a task is first built or one of
its names is used (:mod:`cabench.tasks.classification` and its siblings declare the tasks without importing torch)."""
