"""Statistical models over panels: DiD, event studies, inference (built in later issues)."""
