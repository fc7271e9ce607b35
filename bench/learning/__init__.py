"""Learning proofs: AMC against no-AMC, box quality filters, box verification (the pointing game)."""
