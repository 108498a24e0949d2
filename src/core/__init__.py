"""Run plumbing shared by both tasks: resolvers, run dirs, one-line errors, checkpoints, tables, provenance."""
