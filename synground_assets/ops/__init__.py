"""Operations: the CLI, run health and process records, the torchrun job and its launcher, file
permissions, Dagster's private names in one place, and the scale-out profile (`scale/`)."""
