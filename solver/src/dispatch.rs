//! The dispatcher over several solvers (being written).
