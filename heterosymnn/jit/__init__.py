"""jit stage of heterosymnn."""
