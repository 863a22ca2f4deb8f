"""codegen stage of heterosymnn."""
