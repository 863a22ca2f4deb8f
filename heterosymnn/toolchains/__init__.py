"""toolchains stage of heterosymnn."""
