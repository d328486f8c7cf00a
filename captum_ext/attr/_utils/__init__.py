"""Private helpers for the attribution classes: grid operators, solvers, HVPs, batching."""
