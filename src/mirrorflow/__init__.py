"""mirrorflow."""
