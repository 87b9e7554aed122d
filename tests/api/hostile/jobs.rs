//! Attacks through jobs, files and the database: crash loops, starvation, deadlocks, leaks.
