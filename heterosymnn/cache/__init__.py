"""cache stage of heterosymnn."""
