"""Configuration: the recipe book (`recipes.py`, `recipes.yaml`) and the environment (`settings.py`)."""
