"""The fine-tuned checkpoint as an MLflow model: a `pyfunc` flavour that points at phrases, logged
to the training run (and so registrable in the model registry) with a model card.

The model's input is a table with an `image` column (a file path, or the image file's bytes) and a
`phrase` column; its output has `point_x`, `point_y` (the pixel of the original image the
GradCAM map of the phrase points at: the pointing game's point, `grounding/pointing_game.py`).
`mlflow.pyfunc.load_model(uri).predict(table)` is the whole use; `synground-assets` must be
installed where it is loaded (it holds the grounding adapters)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from synground_assets.resources.tracking import TrackedRun

MODEL_NAME = "grounding_model"  # the logged model's name inside its run
CARD = "README.md"  # the model card, beside the MLmodel file (as on the Hugging Face hub)
BATCH_SIZE = 32  # rows per GradCAM pass, unless params say
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "image"), ColSpec("string", "phrase")]),
    outputs=Schema([ColSpec("long", "point_x"), ColSpec("long", "point_y")]),
    params=ParamSchema([ParamSpec("batch_size", "long", BATCH_SIZE)]),
)


class PointingModel(PythonModel):
    """The grounding checkpoint behind MLflow's `pyfunc` interface."""

    def load_context(self, context) -> None:
        from synground_assets.adapters.grounding import load_grounding_model

        self.model = load_grounding_model(context.artifacts["checkpoint"], device="cpu")
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from synground_assets.grounding.gradcam import cross_attention_gradcam
        from synground_assets.grounding.pointing_game import heatmap_point

        missing = {"image", "phrase"} - set(model_input.columns)
        if missing:
            raise ValueError(f"the input table lacks column(s) {', '.join(sorted(missing))}: give `image` (a path or "
                             "the image file's bytes) and `phrase`")
        batch_size = int((params or {}).get("batch_size", BATCH_SIZE))
        if batch_size < 1:
            raise ValueError(f"params batch_size must be at least 1 but is {batch_size}")
        rows = list(enumerate(zip(model_input["image"], model_input["phrase"])))
        points = []
        for start in range(0, len(rows), batch_size):  # the maps of a batch are those of its rows alone
            chunk = rows[start:start + batch_size]
            pictures = [_open_image(image, row) for row, (image, _) in chunk]
            inputs = self.model.preprocess(pictures, [str(phrase) for _, (_, phrase) in chunk])
            cams = cross_attention_gradcam(self.model, inputs).cam.float().cpu()
            points += [heatmap_point(cam, picture.size) for cam, picture in zip(cams, pictures)]
        return pd.DataFrame(points, columns=["point_x", "point_y"], dtype="int64")


def _open_image(image, row: int):
    from PIL import Image

    try:
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else Path(str(image))
        return Image.open(source).convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"row {row}: the image cannot be read ({exc}); give a path to an image file or its bytes") \
            from exc


@dataclass(frozen=True)
class ModelCardFacts:
    recipe: str
    base_model: str
    base_revision: str
    base_licence: str  # assets/exports.model_licence: the dataset card's wording
    objective: str
    steps: int
    synthetic_triplets: int
    real_triplets: int
    shards: int
    held_out: str
    metrics: dict[str, float]
    dagster_run_id: str


def model_card(facts: ModelCardFacts) -> str:
    """A Hugging Face style model card (YAML header + Markdown) of a fine-tuned checkpoint."""
    metrics = [f"| {name} | {value:.4f} |" for name, value in sorted(facts.metrics.items())]
    return "\n".join([
        "---", f"base_model: {facts.base_model}", "tags: [visual-grounding, synground, gradcam, pointing-game]",
        "---", "",
        f"# {facts.base_model} fine-tuned for visual grounding on recipe `{facts.recipe}`", "",
        "Fine-tuned by synground-assets on synthetic image-text-box triplets (plus real triplets where the "
        "recipe names them) with the objective below; it grounds a phrase by the GradCAM map of its "
        "image-text match score.", "",
        "## Training", "",
        "| field | value |", "|---|---|",
        f"| base model | {facts.base_model} (revision {facts.base_revision or 'as resolved'}) |",
        f"| objective | {facts.objective} |", f"| steps | {facts.steps} |",
        f"| synthetic triplets | {facts.synthetic_triplets} |", f"| real triplets | {facts.real_triplets} |",
        f"| shards | {facts.shards} |", f"| held-out evaluation | {facts.held_out or 'none'} |",
        f"| Dagster run | {facts.dagster_run_id} |", "",
        "## Evaluation (held-out pointing game during training)", "",
        "| metric | value |", "|---|---|", *(metrics or ["| (none reported) | |"]), "",
        "## Use", "",
        "```python", "import mlflow, pandas as pd",
        "model = mlflow.pyfunc.load_model(uri)  # runs:/<run id>/grounding_model or models:/<name>/<version>",
        "model.predict(pd.DataFrame({'image': ['photo.jpg'], 'phrase': ['the red cup']}))  # point_x, point_y",
        "```", "",
        "## Licence", "",
        f"The weights derive from {facts.base_model} ({facts.base_licence}): its licence applies. "
        "The training images were drawn by the recipe's generator, whose licence terms apply to them.", "",
    ])


def log_grounding_model(run: TrackedRun, checkpoint: Path, card: str, work: Path,
                        registered_name: str | None = None) -> str:
    """Log the checkpoint folder to `run` as a `pyfunc` model with its card; register it under
    `registered_name` when given. Returns the model's URI (`models:/<model id>`)."""
    card_path = work / CARD
    card_path.write_text(card)
    mlflow.set_tracking_uri(run.tracking_uri)
    with mlflow.start_run(run_id=run.run_id), warnings.catch_warnings():  # the asset's run; it ends it itself
        # The signature is given; MLflow would still nudge for an input example, which here would be an
        # image file copied into every logged model. Its message starts with a colour code: hence `.*`.
        warnings.filterwarnings("ignore", message=r".*An input example was not provided", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=PointingModel(),
            artifacts={"checkpoint": str(checkpoint), "card": str(card_path)},
            signature=SIGNATURE, pip_requirements=["synground-assets", "torch", "transformers", "pillow"],
            registered_model_name=registered_name or None, metadata={"model_card": CARD},
        )
        mlflow.log_artifact(str(card_path))  # the card also at the run's top level, beside quality_report.csv
    return info.model_uri
