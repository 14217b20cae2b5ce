"""DoLL labels: fusing classifiers' explanations, the sharded label store, and reading it."""
