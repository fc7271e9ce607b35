"""The framework-free learning core: GradCAM, the objectives, the training loop, the pointing game.

No Dagster here, and no adapter: tensors in, tensors out, through the `GroundingModel` protocol
(`grounding/model.py`) that the adapters in `adapters/` implement. Import the modules themselves
(`grounding.config`, `grounding.train`, ...): this package imports nothing, so reading a recipe's
`training:` block (`grounding.config`) does not load torch.
"""
