//! Attacks through request inputs: lengths, counts, depth, what a JSON Patch can grow into.
