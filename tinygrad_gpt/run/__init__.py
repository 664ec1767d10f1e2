"""The training run and what keeps it honest and visible."""
