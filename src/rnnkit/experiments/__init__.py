"""Small, runnable experiments that show what the seed documents claim.

Each is a module with a `main(argv)` entry: `python -m rnnkit.experiments.adding`.
"""
