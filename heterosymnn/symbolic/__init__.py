"""symbolic stage of heterosymnn."""
