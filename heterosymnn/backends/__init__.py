"""backends stage of heterosymnn."""
