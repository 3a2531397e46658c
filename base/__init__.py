"""The base layer: errors, atomic file writes and the output-folder rules. It imports nothing else of ours."""
