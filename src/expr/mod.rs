//! Scalar expressions (parsing and evaluation into the graph).
