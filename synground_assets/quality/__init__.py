"""Triplet quality: the generators' silent failures caught, weak triplets filtered, every removal
recorded with its reason (`removals` lineage table: stage, item, phrase, box, filter, value, threshold).

- `settings.py`: the recipe's `quality:` block, every filter with its default;
- `text.py`: describer / LLM outputs that are empty, cut off at the token limit, or a refusal;
- `images.py`: degenerate (near-constant) images, perceptual hashes, near-duplicate detection;
- `boxes.py`: confidence floor, box area bounds, NMS across the phrases of an image, boxes per phrase;
- `removals.py`: the removal rows and the per-recipe quality report built from them.

The agreement filter (ITM + GradCAM mass in the box) is in `grounding/agreement.py`, next to GradCAM.
No Dagster here: the assets call these functions and record what they return.
"""
