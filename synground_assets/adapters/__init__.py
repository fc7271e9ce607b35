"""The model-backed adapters of the roles (transformers, diffusers, the project's PyTorch ports), the
real-data samplers, and the model suite that builds them from a recipe: the layer above `roles/`
(the contract), `recipes`, and `tiny/`."""
