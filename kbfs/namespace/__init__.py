"""What exists at which name: nodes, directory views, name mapping (pure, synchronous)."""
