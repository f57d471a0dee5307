"""Built-in workloads, each a plain model.py following the contract (`--example NAME`)."""
