"""Read-only analysis over saved runs and models: loss curves, gradient flow through time, gate statistics."""
