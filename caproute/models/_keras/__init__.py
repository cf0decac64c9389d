"""Keras checkpoints: reading (files), the classification path (graph), what each layer is
(roles), weights-only files (weights_only) and caproute layers from the steps (assemble).
The public door is :func:`caproute.models.load_keras`."""
