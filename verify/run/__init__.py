"""Running the claims: the default suite, audits of a user's problem, and trained LoRA points."""

