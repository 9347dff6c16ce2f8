"""Command-line tools: `allpairs`, `wavefront` and `abengine`."""
