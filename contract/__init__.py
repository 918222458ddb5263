"""Facts of the MKA1 wire contract shared by the client, the pipeline and the embedded backend.

``contract.wire`` is plain Python (the trainer imports it on machines without pydantic);
``contract.hyperparameters`` holds the one constrained hyperparameter type used from CLI to wire.
"""
