"""The roles (analysts, experimenters), what they may see of the state, the evidence checks, and the
`Policy` interface every agent backend implements."""
